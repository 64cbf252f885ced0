//! The search structure a collection's server builds over its rows.

use std::collections::BTreeMap;

use milvus::v2::prelude::{IndexParam, IndexType, MetricType};

use super::layout::EMBEDDING;
use crate::error::{Error, Result};

/// Which search structure the server builds over the rows. `Flat` is exact: its answers are
/// lookalike's own scan's. `Hnsw` and `IvfFlat` are approximate: faster on large
/// collections, they may miss true neighbours (tune with the search parameters `ef`, or
/// `nprobe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnKind {
    /// Brute force: exact.
    Flat,
    /// A graph (parameters `M`, `efConstruction`; search `ef`).
    Hnsw,
    /// Inverted lists of centroids (parameter `nlist`; search `nprobe`).
    IvfFlat,
}

impl AnnKind {
    /// `FLAT`, `HNSW` or `IVF_FLAT` (any case).
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_uppercase().as_str() {
            "FLAT" => Ok(Self::Flat),
            "HNSW" => Ok(Self::Hnsw),
            "IVF_FLAT" => Ok(Self::IvfFlat),
            _ => Err(Error::InvalidArgument(format!("index type {name:?}: use FLAT, HNSW or IVF_FLAT"))),
        }
    }

    /// The server's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flat => "FLAT",
            Self::Hnsw => "HNSW",
            Self::IvfFlat => "IVF_FLAT",
        }
    }

    pub(crate) fn sdk(self) -> IndexType {
        match self {
            Self::Flat => IndexType::Flat,
            Self::Hnsw => IndexType::Hnsw,
            Self::IvfFlat => IndexType::IvfFlat,
        }
    }

    pub(crate) fn from_sdk(index_type: IndexType) -> Option<Self> {
        match index_type {
            IndexType::Flat => Some(Self::Flat),
            IndexType::Hnsw => Some(Self::Hnsw),
            IndexType::IvfFlat => Some(Self::IvfFlat),
            _ => None,
        }
    }
}

/// The search structure and its build parameters (the server's names: `M`,
/// `efConstruction`, `nlist`); unset ones take lookalike's defaults (HNSW: `M` 16,
/// `efConstruction` 200; IVF_FLAT: `nlist` 128).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnIndex {
    /// The structure.
    pub kind: AnnKind,
    /// Build parameters, by the server's names.
    pub params: BTreeMap<String, String>,
}

impl AnnIndex {
    /// Exact search.
    pub fn flat() -> Self {
        Self::new(AnnKind::Flat)
    }

    /// `kind` with its default parameters.
    pub fn new(kind: AnnKind) -> Self {
        let defaults: &[(&str, &str)] = match kind {
            AnnKind::Flat => &[],
            AnnKind::Hnsw => &[("M", "16"), ("efConstruction", "200")],
            AnnKind::IvfFlat => &[("nlist", "128")],
        };
        Self { kind, params: defaults.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    /// Refuses build parameters its structure does not take, and values that are not
    /// positive integers.
    pub fn check(&self) -> Result<()> {
        let takes: &[&str] = match self.kind {
            AnnKind::Flat => &[],
            AnnKind::Hnsw => &["M", "efConstruction"],
            AnnKind::IvfFlat => &["nlist"],
        };
        for (key, value) in &self.params {
            if !takes.contains(&key.as_str()) {
                let known = if takes.is_empty() { "none".to_string() } else { takes.join(", ") };
                return Err(Error::InvalidArgument(format!(
                    "{} takes no build parameter {key:?} (it takes {known})",
                    self.kind.name()
                )));
            }
            if value.parse::<u32>().map_or(true, |n| n == 0) {
                return Err(Error::InvalidArgument(format!(
                    "{} parameter {key} = {value:?}: give a positive whole number",
                    self.kind.name()
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn sdk(&self) -> IndexParam {
        IndexParam::new()
            .field_name(EMBEDDING)
            .index_type(self.kind.sdk())
            .metric_type(MetricType::Ip)
            .extra_params(self.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_parameters_are_checked_against_their_structure() {
        assert!(AnnIndex::new(AnnKind::Hnsw).check().is_ok());
        assert!(AnnIndex::new(AnnKind::IvfFlat).check().is_ok());
        let with = |kind, key: &str, value: &str| {
            let mut index = AnnIndex::new(kind);
            index.params.insert(key.into(), value.into());
            index.check().map_err(|e| e.to_string())
        };
        assert!(with(AnnKind::Hnsw, "M", "32").is_ok());
        assert!(with(AnnKind::Hnsw, "nlist", "8").unwrap_err().contains("takes no build parameter \"nlist\""));
        assert!(with(AnnKind::Hnsw, "M", "abc").unwrap_err().contains("positive whole number"));
        assert!(with(AnnKind::IvfFlat, "nlist", "0").unwrap_err().contains("positive whole number"));
        assert!(with(AnnKind::Flat, "M", "8").unwrap_err().contains("it takes none"));
    }
}
