//! The WGSL sources, one file per kernel family, compiled into the binary.

/// One of `shaders/*.wgsl`, by stem.
macro_rules! wgsl {
    ($stem:literal) => {
        include_str!(concat!("../../shaders/", $stem, ".wgsl"))
    };
}

/// A kernel family's WGSL file in `shaders/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShaderFile {
    /// `conv2d.wgsl`: convolutions as implicit GEMMs.
    Conv2d,
    /// `batch_norm.wgsl`: inference batch-norm.
    BatchNorm,
    /// `pool.wgsl`: max and global average pooling.
    Pool,
    /// `matmul.wgsl`: the tiled GEMM.
    Matmul,
    /// `gemv.wgsl`: the scan of up to four queries.
    Gemv,
    /// `l2_normalize.wgsl`: centring and unit rows.
    L2Normalize,
    /// `topk.wgsl`: top-k selection and merging.
    TopK,
    /// `preprocess.wgsl`: resize, crop and normalise.
    Preprocess,
    /// `matmul_coop.wgsl` on 8x8x8 matrix units (after `coop_f16_8.wgsl` and
    /// `coop_gemm.wgsl`).
    MatmulCoop8,
    /// `matmul_coop.wgsl` on 16x16x16 matrix units.
    MatmulCoop16,
    /// `conv2d_coop.wgsl` on 8x8x8 matrix units.
    Conv2dCoop8,
    /// `conv2d_coop.wgsl` on 16x16x16 matrix units.
    Conv2dCoop16,
    /// `conv2d_backward.wgsl`: the convolution's gradients.
    Conv2dBackward,
    /// `dense.wgsl`: the dense layer, forward and backward.
    Dense,
    /// `train_sample.wgsl`: a training step's pairs, drawn on the GPU.
    TrainSample,
    /// `metric_loss.wgsl`: the metric-learning loss and its gradient.
    MetricLoss,
    /// `adam.wgsl`: the fused Adam update.
    Adam,
}

impl ShaderFile {
    /// Every shader, for tests that validate them all.
    pub const ALL: [ShaderFile; 17] = [
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
        ShaderFile::Conv2dCoop8,
        ShaderFile::Conv2dCoop16,
        ShaderFile::Conv2dBackward,
        ShaderFile::Dense,
        ShaderFile::TrainSample,
        ShaderFile::MetricLoss,
        ShaderFile::Adam,
    ];

    /// The file's stem, as it appears in error messages.
    pub fn name(self) -> &'static str {
        match self {
            ShaderFile::Conv2d => "conv2d_io.wgsl + conv2d.wgsl + fma_tile.wgsl",
            ShaderFile::BatchNorm => "batch_norm.wgsl",
            ShaderFile::Pool => "pool.wgsl",
            ShaderFile::Matmul => "matmul.wgsl + fma_tile.wgsl",
            ShaderFile::Gemv => "gemv.wgsl",
            ShaderFile::L2Normalize => "l2_normalize.wgsl",
            ShaderFile::TopK => "topk.wgsl",
            ShaderFile::Preprocess => "preprocess.wgsl",
            ShaderFile::MatmulCoop8 => "coop_f16_8.wgsl + coop_gemm.wgsl + matmul_coop.wgsl",
            ShaderFile::MatmulCoop16 => "coop_f16_16.wgsl + coop_gemm.wgsl + matmul_coop.wgsl",
            ShaderFile::Conv2dCoop8 => "coop_f16_8.wgsl + coop_gemm.wgsl + conv2d_io.wgsl + conv2d_coop.wgsl",
            ShaderFile::Conv2dCoop16 => "coop_f16_16.wgsl + coop_gemm.wgsl + conv2d_io.wgsl + conv2d_coop.wgsl",
            ShaderFile::Conv2dBackward => "conv2d_backward.wgsl",
            ShaderFile::Dense => "dense.wgsl",
            ShaderFile::TrainSample => "train_sample.wgsl",
            ShaderFile::MetricLoss => "metric_loss.wgsl",
            ShaderFile::Adam => "adam.wgsl",
        }
    }

    /// Whether the shader runs on matrix units (cooperative matrices, an experimental wgpu
    /// feature): translated for Vulkan and Metal only, built only on devices that have them.
    pub fn is_cooperative(self) -> bool {
        matches!(
            self,
            ShaderFile::MatmulCoop8 | ShaderFile::MatmulCoop16 | ShaderFile::Conv2dCoop8 | ShaderFile::Conv2dCoop16
        )
    }

    /// The WGSL text.
    pub fn source(self) -> &'static str {
        match self {
            // fma_tile.wgsl goes after the file that declares tile_a: naga 30 mishandles a
            // function that uses a global declared after it.
            ShaderFile::Conv2d => concat!(wgsl!("conv2d_io"), wgsl!("conv2d"), wgsl!("fma_tile")),
            ShaderFile::BatchNorm => include_str!("../../shaders/batch_norm.wgsl"),
            ShaderFile::Pool => include_str!("../../shaders/pool.wgsl"),
            ShaderFile::Matmul => concat!(wgsl!("matmul"), wgsl!("fma_tile")),
            ShaderFile::Gemv => include_str!("../../shaders/gemv.wgsl"),
            ShaderFile::L2Normalize => include_str!("../../shaders/l2_normalize.wgsl"),
            ShaderFile::TopK => include_str!("../../shaders/topk.wgsl"),
            ShaderFile::Preprocess => include_str!("../../shaders/preprocess.wgsl"),
            // The header fixes the matrix size and types, coop_gemm.wgsl multiplies, the
            // problem file says what A, B and the output are: each written once.
            ShaderFile::MatmulCoop8 => concat!(wgsl!("coop_f16_8"), wgsl!("coop_gemm"), wgsl!("matmul_coop")),
            ShaderFile::MatmulCoop16 => concat!(wgsl!("coop_f16_16"), wgsl!("coop_gemm"), wgsl!("matmul_coop")),
            ShaderFile::Conv2dCoop8 => {
                concat!(wgsl!("coop_f16_8"), wgsl!("coop_gemm"), wgsl!("conv2d_io"), wgsl!("conv2d_coop"))
            }
            ShaderFile::Conv2dCoop16 => {
                concat!(wgsl!("coop_f16_16"), wgsl!("coop_gemm"), wgsl!("conv2d_io"), wgsl!("conv2d_coop"))
            }
            ShaderFile::Conv2dBackward => wgsl!("conv2d_backward"),
            ShaderFile::Dense => wgsl!("dense"),
            ShaderFile::TrainSample => wgsl!("train_sample"),
            ShaderFile::MetricLoss => wgsl!("metric_loss"),
            ShaderFile::Adam => wgsl!("adam"),
        }
    }
}
