//! Every WGSL file parsed, validated and translated by naga to SPIR-V, MSL and HLSL, so the
//! Vulkan, Metal and DX12 compile paths are checked without their hardware. The kernels on
//! matrix units go to SPIR-V and MSL (2.3+: simdgroup matrices) only: wgpu has no
//! cooperative matrices on DX12.

use lookalike::gpu::shaders::ShaderFile;
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn module(shader: ShaderFile) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(shader.source())
        .unwrap_or_else(|e| panic!("{}: {}", shader.name(), e.emit_to_string(shader.source())));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", shader.name(), e.emit_to_string(shader.source())));
    (module, info)
}

/// Overrides resolved to their defaults, as a pipeline without constants would see them.
fn resolved(shader: ShaderFile) -> (naga::Module, naga::valid::ModuleInfo) {
    let (module, info) = module(shader);
    let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &Default::default())
        .unwrap_or_else(|e| panic!("{}: overrides: {e}", shader.name()));
    (module.into_owned(), info.into_owned())
}

#[test]
fn every_shader_validates() {
    for shader in ShaderFile::ALL {
        module(shader);
    }
}

#[test]
fn every_shader_translates_to_spirv() {
    for shader in ShaderFile::ALL {
        let (module, info) = resolved(shader);
        spv::write_vec(&module, &info, &spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{} -> SPIR-V: {e}", shader.name()));
    }
}

#[test]
fn every_shader_translates_to_msl() {
    for shader in ShaderFile::ALL {
        let (module, info) = resolved(shader);
        let pipeline = msl::PipelineOptions::default();
        let options = msl::Options {
            lang_version: if shader.is_cooperative() { (2, 3) } else { msl::Options::default().lang_version },
            ..Default::default()
        };
        msl::write_string(&module, &info, &options, &pipeline)
            .unwrap_or_else(|e| panic!("{} -> MSL: {e}", shader.name()));
    }
}

#[test]
fn every_shader_translates_to_hlsl() {
    for shader in ShaderFile::ALL.into_iter().filter(|s| !s.is_cooperative()) {
        let (module, info) = resolved(shader);
        let mut out = String::new();
        let options = hlsl::Options::default();
        let pipeline = hlsl::PipelineOptions::default();
        hlsl::Writer::new(&mut out, &options, &pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{} -> HLSL: {e}", shader.name()));
        assert!(out.contains("numthreads"), "{}: HLSL has no compute entry point", shader.name());
    }
}
