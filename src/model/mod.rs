//! ResNet50: architecture, weights (safetensors), seeded random weights, and the forward
//! on the CPU and the GPU.

pub mod cpu;
pub mod gpu;
pub mod random;
pub mod resnet50;
mod weights;

pub use cpu::CpuResNet50;
pub use gpu::{BatchNormMode, ConvMath, GpuResNet50};
pub use random::RandomResNet50;
pub use resnet50::{ResNet50, FEATURE_DIM, MIN_INPUT};
