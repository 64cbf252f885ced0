//! The on-disk cache of autotune results: one JSON file per adapter, driver, lookalike
//! version and set of shader sources, and [`load_for`], which picks a context's launch
//! shapes from it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::shaders::ShaderFile;
use crate::gpu::Context;
use crate::ops::Tuning;
use crate::tune::TuneReport;

/// Where the [`Tuning`] of [`load_for`] came from.
#[derive(Debug, Clone, PartialEq)]
pub enum TuningSource {
    /// An autotune result cached for this adapter.
    Cached(PathBuf),
    /// The built-in table, and why no cached result applies.
    Table(String),
}

impl fmt::Display for TuningSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TuningSource::Cached(path) => write!(f, "autotuned: {}", path.display()),
            TuningSource::Table(why) => write!(f, "built-in table ({why})"),
        }
    }
}

/// What a cached file must match to apply: the adapter, its driver, lookalike's version and
/// a hash of the shader sources (any kernel edit invalidates old measurements).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheKey {
    lookalike: String,
    adapter: String,
    backend: String,
    device_type: String,
    vendor: u32,
    device: u32,
    driver: String,
    driver_info: String,
    shaders_fnv1a: String,
}

impl CacheKey {
    fn of(info: &wgpu::AdapterInfo) -> Self {
        let mut hash = Fnv1a::default();
        for shader in ShaderFile::ALL {
            hash.write(shader.source().as_bytes());
        }
        Self {
            lookalike: env!("CARGO_PKG_VERSION").to_string(),
            adapter: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            vendor: info.vendor,
            device: info.device,
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            shaders_fnv1a: format!("{:016x}", hash.0),
        }
    }

    fn file_name(&self) -> String {
        let mut hash = Fnv1a::default();
        // serde_json of a struct of strings and integers cannot fail.
        hash.write(serde_json::to_string(self).unwrap_or_default().as_bytes());
        format!("tuning-{:016x}.json", hash.0)
    }
}

/// 64-bit FNV-1a: a stable hash for file names (std's hasher may change between releases).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[derive(Serialize)]
struct CacheFileOut<'a> {
    key: CacheKey,
    tuning: Tuning,
    report: &'a TuneReport,
}

#[derive(Deserialize)]
struct CacheFileIn {
    key: CacheKey,
    tuning: Tuning,
}

/// The cache folder (see the module docs), if the environment names one.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("LOOKALIKE_CACHE_DIR") {
        return Some(dir);
    }
    let user_cache = if cfg!(windows) {
        var("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|home| home.join("Library").join("Caches"))
    } else {
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|home| home.join(".cache")))
    };
    user_cache.map(|dir| dir.join("lookalike"))
}

/// The file in `dir` that holds the autotune result for this adapter.
pub fn cache_path(dir: &Path, info: &wgpu::AdapterInfo) -> PathBuf {
    dir.join(CacheKey::of(info).file_name())
}

/// Writes `report`'s tuning for this adapter into `dir` (created if missing); returns the file.
pub fn save(dir: &Path, info: &wgpu::AdapterInfo, report: &TuneReport) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = cache_path(dir, info);
    let file = CacheFileOut { key: CacheKey::of(info), tuning: report.tuning, report };
    let text = serde_json::to_string_pretty(&file).map_err(|e| Error::InvalidArgument(format!("tuning cache: {e}")))?;
    crate::atomic::write_atomic(&path, |w| w.write_all(text.as_bytes()))?;
    Ok(path)
}

/// The tuning cached in `dir` for this adapter: `Ok(None)` when there is none, an error when
/// the file is unreadable, malformed, or written for another adapter, driver or version.
pub fn load(dir: &Path, info: &wgpu::AdapterInfo) -> Result<Option<(Tuning, PathBuf)>> {
    let path = cache_path(dir, info);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let bad = |why: String| Error::InvalidArgument(format!("tuning cache {}: {why}", path.display()));
    let file: CacheFileIn = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if file.key != CacheKey::of(info) {
        return Err(bad(format!("written for {:?}, not this adapter {:?}", file.key, CacheKey::of(info))));
    }
    file.tuning.gemv.validate().map_err(|e| bad(e.to_string()))?;
    let workgroup = file.tuning.topk_workgroup;
    if !workgroup.is_power_of_two() || workgroup > 1024 {
        return Err(bad(format!("top-k workgroups of {workgroup} invocations are not a power of two up to 1024")));
    }
    // The rest of a layout on matrix units (tile_k a multiple of their size, limits) is
    // checked against the device when a convolution is prepared.
    if let Some(tiles) = file.tuning.coop_tiles {
        if tiles.sg_rows == 0 || tiles.sg_cols == 0 || tiles.tile_k == 0 {
            return Err(bad(format!("matrix-unit layout {tiles:?} has an empty side")));
        }
    }
    Ok(Some((file.tuning, path)))
}

/// The launch shapes for `ctx`'s adapter and where they came from: the autotune result
/// cached for it, else the built-in table ([`Tuning::for_adapter`]). Reads
/// `LOOKALIKE_TUNING` (`table` ignores cached files) and the cache folder ([`cache_dir`]);
/// a cached file that cannot be used is passed over, and the source says why. What the
/// command line does before it dispatches; a library caller that wants no file read uses
/// the table.
pub fn load_for(ctx: &Context) -> (Tuning, TuningSource) {
    for_adapter(ctx.adapter_info())
}

fn for_adapter(info: &wgpu::AdapterInfo) -> (Tuning, TuningSource) {
    let table = Tuning::for_adapter(info);
    if std::env::var("LOOKALIKE_TUNING").is_ok_and(|v| v == "table") {
        return (table, TuningSource::Table("LOOKALIKE_TUNING=table".into()));
    }
    let Some(dir) = cache_dir() else {
        return (table, TuningSource::Table("no cache folder: set LOOKALIKE_CACHE_DIR or HOME".into()));
    };
    match load(&dir, info) {
        Ok(Some((tuning, path))) => (tuning, TuningSource::Cached(path)),
        Ok(None) => (table, TuningSource::Table("not autotuned here yet: `lookalike tune` measures and caches".into())),
        Err(e) => (table, TuningSource::Table(format!("cached file ignored: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::coop::CoopTiles;
    use crate::ops::gemv::GemvTiles;
    use crate::tune::TuneOptions;

    fn lavapipe_info() -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            vendor: 0x10005,
            driver: "llvmpipe".into(),
            driver_info: "Mesa 25.0.7".into(),
            ..wgpu::AdapterInfo::new(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan)
        }
    }

    #[test]
    fn cache_round_trip_and_mismatches() {
        let dir = std::env::temp_dir().join(format!("lookalike-tune-test-{}", std::process::id()));
        let info = lavapipe_info();
        assert!(load(&dir, &info).unwrap().is_none(), "nothing cached yet");
        let coop_tiles = Some(CoopTiles { sg_rows: 4, sg_cols: 2, tile_k: 32 });
        let tuning = Tuning {
            gemv: GemvTiles { workgroup: 256, lanes: 8 },
            min_cols_for_8x8: Some(512),
            min_groups_for_8x8: 40,
            topk_workgroup: 64,
            coop_tiles,
        };
        let options = TuneOptions { batch: 1, resolution: 224, gemv_rows: 1, topk_len: 100, reps: 1 };
        let r = TuneReport {
            tuning,
            table: Tuning::default(),
            options,
            timer: "wall clock",
            // A rejected candidate's infinite time is written as null and read past.
            convs: vec![crate::tune::ConvTiming {
                layer: "1x7x7x512 -> 2048, 1x1/1".into(),
                count: 3,
                rows: 49,
                cols: 2048,
                groups_8x8: 16,
                ms_4x4: 0.5,
                ms_8x8: f64::INFINITY,
            }],
            gemv: vec![],
            topk: vec![],
            coop: vec![],
            rejected: vec!["conv 1x7x7x512 -> 2048, 1x1/1 in 8x8 blocks: ...".into()],
        };
        let path = save(&dir, &info, &r).unwrap();
        let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(written["report"]["convs"][0]["ms_8x8"].is_null(), "{written}");
        assert_eq!(load(&dir, &info).unwrap(), Some((r.tuning, path.clone())));
        // Another driver version looks for another file.
        let other = wgpu::AdapterInfo { driver_info: "Mesa 25.1.0".into(), ..info.clone() };
        assert!(load(&dir, &other).unwrap().is_none());
        // A file under this adapter's name written for another one, or malformed: an error.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("Mesa 25.0.7", "Mesa 9")).unwrap();
        let err = load(&dir, &info).unwrap_err().to_string();
        assert!(err.contains("not this adapter"), "{err}");
        std::fs::write(&path, text.replace("\"topk_workgroup\": 64", "\"topk_workgroup\": 48")).unwrap();
        let err = load(&dir, &info).unwrap_err().to_string();
        assert!(err.contains("top-k workgroups of 48"), "{err}");
        std::fs::write(&path, text.replace("\"sg_rows\": 4", "\"sg_rows\": 0")).unwrap();
        let err = load(&dir, &info).unwrap_err().to_string();
        assert!(err.contains("empty side"), "{err}");
        // Files from before the matrix-unit layout existed still load, without one.
        std::fs::write(
            &path,
            text.replace(
                ",\n    \"coop_tiles\": {\n      \"sg_rows\": 4,\n      \"sg_cols\": 2,\n      \"tile_k\": 32\n    }",
                "",
            ),
        )
        .unwrap();
        assert_eq!(load(&dir, &info).unwrap().map(|(t, _)| t.coop_tiles), Some(None));
        std::fs::write(&path, "{").unwrap();
        assert!(load(&dir, &info).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
