//! Facts about GPUs that wgpu does not report, by adapter name: multiprocessor counts (for
//! launch shapes, [`crate::ops::Tuning::for_adapter`]) and datasheet fp32 peaks and memory
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

/// More specific names first: the first match wins ("H100 PCIe" before "H100").
const SPECS: [GpuSpec; 7] = [
    GpuSpec { name: "H100 PCIe", multiprocessors: 114, fp32_tflops: 51.2, memory_gbps: 2000.0 },
    GpuSpec { name: "H100", multiprocessors: 132, fp32_tflops: 66.9, memory_gbps: 3350.0 },
    GpuSpec { name: "H200", multiprocessors: 132, fp32_tflops: 66.9, memory_gbps: 4800.0 },
    GpuSpec { name: "H800", multiprocessors: 132, fp32_tflops: 66.9, memory_gbps: 3350.0 },
    GpuSpec { name: "A100-SXM4-80GB", multiprocessors: 108, fp32_tflops: 19.5, memory_gbps: 2039.0 },
    GpuSpec { name: "A100", multiprocessors: 108, fp32_tflops: 19.5, memory_gbps: 1555.0 },
    GpuSpec { name: "RTX 4090", multiprocessors: 128, fp32_tflops: 82.6, memory_gbps: 1008.0 },
];

/// The datasheet figures of the GPU an adapter name names, if it is one of the known ones.
pub fn gpu_spec(adapter_name: &str) -> Option<&'static GpuSpec> {
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
        // Every entry is reachable: no earlier name is a substring of a later one.
        for (i, spec) in SPECS.iter().enumerate() {
            assert_eq!(gpu_spec(spec.name), Some(&SPECS[i]), "{} is shadowed", spec.name);
        }
    }
}
