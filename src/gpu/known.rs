//! Facts about GPUs that wgpu does not report, by adapter name: multiprocessor counts (for
//! launch shapes, `ops::Tuning::for_adapter`) and datasheet fp32 peaks and memory
//! bandwidths (for `lookalike bench`'s fraction of peak).

/// One GPU's datasheet figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSpec {
    /// A substring of the adapter's name that identifies the GPU.
    pub name: &'static str,
    /// Streaming multiprocessors (NVIDIA SMs).
    pub multiprocessors: usize,
    /// Dense fp32 peak, TFLOP/s (boost clock, no tensor cores).
    pub fp32_tflops: f64,
    /// Memory bandwidth, GB/s.
    pub memory_gbps: f64,
}

/// More specific names first: the first match wins ("H100 PCIe" before "H100", "GH200"
/// before "H200"); a name that would also match another card's carries the vendor ("NVIDIA
/// A40", not the "A40" of "RTX A4000"). Laptop GPUs share desktop names with other figures
/// and are not listed ([`gpu_spec`] returns `None` for them). Datasheet figures: boost-clock
/// fp32 without tensor cores, memory bandwidth.
const SPECS: [GpuSpec; 25] = [
    GpuSpec { name: "H100 PCIe", multiprocessors: 114, fp32_tflops: 51.2, memory_gbps: 2000.0 },
    GpuSpec { name: "H100 NVL", multiprocessors: 132, fp32_tflops: 60.0, memory_gbps: 3900.0 },
    GpuSpec { name: "H100", multiprocessors: 132, fp32_tflops: 66.9, memory_gbps: 3350.0 },
    // GH200 with 96 GB of HBM3 (its "480GB" counts the Grace memory), then with HBM3e.
    GpuSpec { name: "GH200 480GB", multiprocessors: 132, fp32_tflops: 66.9, memory_gbps: 4000.0 },
    GpuSpec { name: "GH200", multiprocessors: 132, fp32_tflops: 66.9, memory_gbps: 4900.0 },
    GpuSpec { name: "H200 NVL", multiprocessors: 132, fp32_tflops: 60.0, memory_gbps: 4800.0 },
    GpuSpec { name: "H200", multiprocessors: 132, fp32_tflops: 66.9, memory_gbps: 4800.0 },
    GpuSpec { name: "H800 PCIe", multiprocessors: 114, fp32_tflops: 51.2, memory_gbps: 2000.0 },
    GpuSpec { name: "H800", multiprocessors: 132, fp32_tflops: 66.9, memory_gbps: 3350.0 },
    GpuSpec { name: "A100-SXM4-80GB", multiprocessors: 108, fp32_tflops: 19.5, memory_gbps: 2039.0 },
    GpuSpec { name: "A100 80GB PCIe", multiprocessors: 108, fp32_tflops: 19.5, memory_gbps: 1935.0 },
    GpuSpec { name: "A100", multiprocessors: 108, fp32_tflops: 19.5, memory_gbps: 1555.0 },
    GpuSpec { name: "NVIDIA A40", multiprocessors: 84, fp32_tflops: 37.4, memory_gbps: 696.0 },
    GpuSpec { name: "L40S", multiprocessors: 142, fp32_tflops: 91.6, memory_gbps: 864.0 },
    GpuSpec { name: "L40", multiprocessors: 142, fp32_tflops: 90.5, memory_gbps: 864.0 },
    GpuSpec { name: "NVIDIA L4", multiprocessors: 58, fp32_tflops: 30.3, memory_gbps: 300.0 },
    GpuSpec { name: "Tesla T4", multiprocessors: 40, fp32_tflops: 8.1, memory_gbps: 320.0 },
    GpuSpec { name: "V100S", multiprocessors: 80, fp32_tflops: 16.4, memory_gbps: 1134.0 },
    GpuSpec { name: "V100-PCIE", multiprocessors: 80, fp32_tflops: 14.0, memory_gbps: 900.0 },
    GpuSpec { name: "V100", multiprocessors: 80, fp32_tflops: 15.7, memory_gbps: 900.0 },
    GpuSpec { name: "RTX 5090", multiprocessors: 170, fp32_tflops: 104.8, memory_gbps: 1792.0 },
    GpuSpec { name: "RTX 4090 D", multiprocessors: 114, fp32_tflops: 73.5, memory_gbps: 1008.0 },
    GpuSpec { name: "RTX 4090", multiprocessors: 128, fp32_tflops: 82.6, memory_gbps: 1008.0 },
    GpuSpec { name: "RTX 4080 SUPER", multiprocessors: 80, fp32_tflops: 52.2, memory_gbps: 736.0 },
    GpuSpec { name: "RTX 4080", multiprocessors: 76, fp32_tflops: 48.7, memory_gbps: 716.8 },
];

/// The datasheet figures of the GPU an adapter name names, if it is one of the known ones.
pub fn gpu_spec(adapter_name: &str) -> Option<&'static GpuSpec> {
    if adapter_name.contains("Laptop") {
        return None;
    }
    SPECS.iter().find(|spec| adapter_name.contains(spec.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_name_wins() {
        let sms = |name| gpu_spec(name).map(|s| s.multiprocessors);
        assert_eq!(sms("NVIDIA H100 80GB HBM3"), Some(132));
        assert_eq!(sms("NVIDIA H100 PCIe"), Some(114));
        assert_eq!(gpu_spec("NVIDIA A100-SXM4-80GB").map(|s| s.memory_gbps), Some(2039.0));
        assert_eq!(gpu_spec("NVIDIA A100-PCIE-40GB").map(|s| s.memory_gbps), Some(1555.0));
        assert_eq!(sms("llvmpipe (LLVM 15.0.6, 256 bits)"), None);
        // Names that contain another card's.
        assert_eq!(gpu_spec("NVIDIA H100 NVL").map(|s| s.memory_gbps), Some(3900.0));
        assert_eq!(sms("NVIDIA L40S"), Some(142));
        assert_eq!(sms("NVIDIA L4"), Some(58));
        assert_eq!(sms("NVIDIA RTX A4000"), None);
        assert_eq!(gpu_spec("Tesla V100S-PCIE-32GB").map(|s| s.memory_gbps), Some(1134.0));
        assert_eq!(gpu_spec("Tesla V100-PCIE-16GB").map(|s| s.fp32_tflops), Some(14.0));
        assert_eq!(gpu_spec("Tesla V100-SXM2-16GB").map(|s| s.fp32_tflops), Some(15.7));
        assert_eq!(sms("NVIDIA GeForce RTX 4080 SUPER"), Some(80));
        assert_eq!(gpu_spec("NVIDIA A100 80GB PCIe").map(|s| s.memory_gbps), Some(1935.0));
        assert_eq!(gpu_spec("NVIDIA GH200 480GB").map(|s| s.memory_gbps), Some(4000.0));
        assert_eq!(gpu_spec("NVIDIA H200 NVL").map(|s| s.fp32_tflops), Some(60.0));
        assert_eq!(sms("NVIDIA GeForce RTX 4090 D"), Some(114));
        assert_eq!(sms("NVIDIA GeForce RTX 4090 Laptop GPU"), None);
        // Every entry is reachable: no earlier name is a substring of a later one.
        for (i, spec) in SPECS.iter().enumerate() {
            assert_eq!(gpu_spec(spec.name), Some(&SPECS[i]), "{} is shadowed", spec.name);
        }
    }
}
