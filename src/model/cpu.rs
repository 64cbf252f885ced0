//! The whole ResNet50 forward on the CPU: the oracle for the GPU forward and the
//! benchmark baseline. Batch-norm is folded into the conv weights once, at construction.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cpu;
use crate::cpu::conv2d::ConvWeights;
use crate::error::{Error, Result};
use crate::model::resnet50::{Act, ConvBn, Executor, ResNet50, FEATURE_DIM};
use crate::model::{check_features, F32_OVERFLOW};
use crate::ops::pool::MaxPoolShape;

/// A convolution's batch-norm-folded weights, as the CPU multiplies them, and its bias.
type Folded = HashMap<String, (ConvWeights, Vec<f32>)>;

/// ResNet50 prepared for the CPU: folded weights (packed for the CPU's GEMM kernel where it
/// has one) and biases per conv.
pub struct CpuResNet50 {
    net: ResNet50,
    folded: Folded,
    /// Activation buffers kept between forwards: fresh multi-megabyte allocations cost a
    /// page fault per 4 KiB on first touch, a fifth of the CPU time at batch 8.
    spare: Mutex<Vec<Vec<f32>>>,
}

impl CpuResNet50 {
    /// Prepares `net` for the CPU forward: batch-norm folded into the weights, packed where the CPU has a GEMM kernel of its own.
    pub fn new(net: &ResNet50) -> Result<Self> {
        let folded = net
            .convs()
            .map(|c| {
                let (hwio, bias) = c.folded()?;
                Ok((c.conv_name.clone(), (ConvWeights::new(hwio, c.kernel * c.kernel * c.in_c, c.out_c)?, bias)))
            })
            .collect::<Result<_>>()?;
        Ok(Self { net: ResNet50::architecture(), folded, spare: Mutex::default() })
    }

    /// `[batch, h, w, 3]` NHWC normalised images → `[batch, 2048]` features.
    pub fn forward(&self, input: &[f32], batch: usize, height: usize, width: usize) -> Result<Vec<f32>> {
        ResNet50::check_input(height, width)?;
        cpu::check_slice("resnet50 input", input, batch * height * width * 3)?;
        cpu::check_finite("resnet50 input", input)?;
        let spare = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|e| e.into_inner()));
        let mut exec = CpuExecutor { folded: &self.folded, acts: vec![Some(input.to_vec())], spare };
        let result =
            self.net.walk(&mut exec, Act { id: 0, h: height, w: width, c: 3 }, batch).and_then(|x| exec.take(x));
        let mut spare = exec.spare;
        spare.extend(exec.acts.into_iter().flatten());
        *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = spare;
        let features = result?;
        check_features(&features, FEATURE_DIM, 0, "ResNet50", F32_OVERFLOW)?;
        Ok(features)
    }
}

/// Activations live in a slab indexed by [`Act::id`].
pub(crate) struct CpuExecutor<'a> {
    folded: &'a Folded,
    acts: Vec<Option<Vec<f32>>>,
    spare: Vec<Vec<f32>>,
}

impl CpuExecutor<'_> {
    fn get(&self, x: Act) -> Result<&[f32]> {
        self.acts.get(x.id).and_then(|a| a.as_deref()).ok_or_else(|| Error::Gpu {
            context: "cpu forward".into(),
            message: format!("activation {} read after release", x.id),
        })
    }

    fn push(&mut self, data: Vec<f32>, h: usize, w: usize, c: usize) -> Act {
        self.acts.push(Some(data));
        Act { id: self.acts.len() - 1, h, w, c }
    }

    /// A buffer of `len` values with unspecified contents: the smallest spare one that
    /// fits, else the largest grown.
    fn buffer(&mut self, len: usize) -> Vec<f32> {
        let fit = (0..self.spare.len())
            .filter(|&i| self.spare[i].capacity() >= len)
            .min_by_key(|&i| self.spare[i].capacity());
        let pick = fit.or_else(|| (0..self.spare.len()).max_by_key(|&i| self.spare[i].capacity()));
        let mut buf = pick.map(|i| self.spare.swap_remove(i)).unwrap_or_default();
        buf.resize(len, 0.0);
        buf
    }

    fn take(&mut self, x: Act) -> Result<Vec<f32>> {
        let data = self.get(x)?.to_vec();
        self.acts[x.id] = None;
        Ok(data)
    }
}

impl Executor for CpuExecutor<'_> {
    fn conv(&mut self, layer: &ConvBn, x: Act, batch: usize, residual: Option<Act>, relu: bool) -> Result<Act> {
        let shape = layer.shape(batch, x.h, x.w);
        let (weight, bias) =
            self.folded.get(&layer.conv_name).ok_or_else(|| Error::MissingTensor { name: layer.conv_name.clone() })?;
        let mut out = self.buffer(shape.output_len());
        let residual = residual.map(|r| self.get(r)).transpose()?;
        let epilogue = cpu::conv2d::Epilogue { bias: Some(bias), residual, relu, ..Default::default() };
        cpu::conv2d::conv2d_prepared_into(&shape, self.get(x)?, weight, &epilogue, &mut out)?;
        Ok(self.push(out, shape.out_h(), shape.out_w(), layer.out_c))
    }

    fn max_pool(&mut self, shape: &MaxPoolShape, x: Act) -> Result<Act> {
        let out = cpu::max_pool(shape, self.get(x)?)?;
        Ok(self.push(out, shape.out_h(), shape.out_w(), x.c))
    }

    fn global_avg_pool(&mut self, x: Act, batch: usize) -> Result<Act> {
        let out = cpu::global_avg_pool(batch, x.h, x.w, x.c, self.get(x)?)?;
        Ok(self.push(out, 1, 1, x.c))
    }

    fn release(&mut self, x: Act) {
        if let Some(buf) = self.acts.get_mut(x.id).and_then(Option::take) {
            self.spare.push(buf);
        }
    }
}
