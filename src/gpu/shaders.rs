//! The WGSL sources, one file per kernel family, compiled into the binary.

/// A kernel family's WGSL file in `shaders/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShaderFile {
    Conv2d,
    BatchNorm,
    Pool,
    Matmul,
    Gemv,
    L2Normalize,
    TopK,
    Preprocess,
    /// `matmul_coop.wgsl` on 8x8x8 matrix units (`coop_f16_8.wgsl` prepended).
    MatmulCoop8,
    /// `matmul_coop.wgsl` on 16x16x16 matrix units (`coop_f16_16.wgsl` prepended).
    MatmulCoop16,
}

impl ShaderFile {
    /// Every shader, for tests that validate them all.
    pub const ALL: [ShaderFile; 10] = [
        ShaderFile::Conv2d,
        ShaderFile::BatchNorm,
        ShaderFile::Pool,
        ShaderFile::Matmul,
        ShaderFile::Gemv,
        ShaderFile::L2Normalize,
        ShaderFile::TopK,
        ShaderFile::Preprocess,
        ShaderFile::MatmulCoop8,
        ShaderFile::MatmulCoop16,
    ];

    /// The file's stem, as it appears in error messages.
    pub fn name(self) -> &'static str {
        match self {
            ShaderFile::Conv2d => "conv2d.wgsl",
            ShaderFile::BatchNorm => "batch_norm.wgsl",
            ShaderFile::Pool => "pool.wgsl",
            ShaderFile::Matmul => "matmul.wgsl",
            ShaderFile::Gemv => "gemv.wgsl",
            ShaderFile::L2Normalize => "l2_normalize.wgsl",
            ShaderFile::TopK => "topk.wgsl",
            ShaderFile::Preprocess => "preprocess.wgsl",
            ShaderFile::MatmulCoop8 => "coop_f16_8.wgsl + matmul_coop.wgsl",
            ShaderFile::MatmulCoop16 => "coop_f16_16.wgsl + matmul_coop.wgsl",
        }
    }

    /// Whether the shader runs on matrix units (cooperative matrices, an experimental wgpu
    /// feature): translated for Vulkan and Metal only, built only on devices that have them.
    pub fn is_cooperative(self) -> bool {
        matches!(self, ShaderFile::MatmulCoop8 | ShaderFile::MatmulCoop16)
    }

    /// The WGSL text.
    pub fn source(self) -> &'static str {
        match self {
            ShaderFile::Conv2d => include_str!("../../shaders/conv2d.wgsl"),
            ShaderFile::BatchNorm => include_str!("../../shaders/batch_norm.wgsl"),
            ShaderFile::Pool => include_str!("../../shaders/pool.wgsl"),
            ShaderFile::Matmul => include_str!("../../shaders/matmul.wgsl"),
            ShaderFile::Gemv => include_str!("../../shaders/gemv.wgsl"),
            ShaderFile::L2Normalize => include_str!("../../shaders/l2_normalize.wgsl"),
            ShaderFile::TopK => include_str!("../../shaders/topk.wgsl"),
            ShaderFile::Preprocess => include_str!("../../shaders/preprocess.wgsl"),
            // The header fixes the matrix size and types; the kernel is written once.
            ShaderFile::MatmulCoop8 => concat!(include_str!("../../shaders/coop_f16_8.wgsl"), include_str!("../../shaders/matmul_coop.wgsl")),
            ShaderFile::MatmulCoop16 => concat!(include_str!("../../shaders/coop_f16_16.wgsl"), include_str!("../../shaders/matmul_coop.wgsl")),
        }
    }
}
