//! Times the convnet's backward kernels (and the dense forward) on the recipe's shapes: each
//! convolution's weight + bias gradient and input gradient, the global-average-pool gradient
//! and the dense layer, at 28x28x1 and 32x32x3. The convolution forward and the CPU twin's
//! backward of the same layer are timed beside them. FLOPs count a multiply-add as two:
//! 2·M·K·Cout for each of a convolution's gradients (the bias row of the weight kernel and
//! the padding of partial tiles are not counted).
//!
//! cargo run --release --example backward_kernels -- [--batch 20] [--reps 10]

use std::time::Instant;

use clap::Parser;
use lookalike::cpu::convnet as twin;
use lookalike::gpu::Dispatch;
use lookalike::model::convnet::{ConvNetSpec, KERNEL, STRIDE};
use lookalike::ops::conv2d::{conv2d, Conv2dBuffers, Conv2dShape};
use lookalike::ops::conv2d_backward::{conv2d_backward_input, conv2d_backward_weight, BackwardTiles, ConvActivations};
use lookalike::ops::dense::{dense_backward_input, dense_backward_weight, dense_forward, DenseShape};
use lookalike::ops::pool::global_avg_pool_backward;
use lookalike::ops::Tuning;
use lookalike::rng::Rng;
use lookalike::Context;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Timed runs per kernel (the median is reported).
    #[arg(long, default_value_t = 10)]
    reps: usize,
}

fn row(name: &str, ms: f64, flops: Option<f64>) {
    match flops {
        Some(f) => println!("| {name} | {ms:.3} | {:.2} | {:.2} |", f / 1e6, f / ms / 1e6),
        None => println!("| {name} | {ms:.3} | | |"),
    }
}

fn time(ctx: &Context, d: &Dispatch, reps: usize) -> lookalike::Result<f64> {
    ctx.median_ms(&[d], reps)
}

fn main() -> lookalike::Result<()> {
    let args = Args::parse();
    let ctx = Context::new()?;
    let tuning = Tuning::for_adapter(ctx.adapter_info());
    let timing = if ctx.has_timestamps() { "GPU timestamps" } else { "wall clock of submit + wait" };
    println!(
        "{} ({:?}), batch {}, median of {} ({timing})",
        ctx.adapter_info().name,
        ctx.adapter_info().backend,
        args.batch,
        args.reps
    );
    println!("| kernel | ms | MFLOP | GFLOP/s |\n| --- | --- | --- | --- |");
    let mut rng = Rng::new(1);
    let batch = args.batch;
    for (side, channels) in [(28, 1), (32, 3)] {
        let spec = ConvNetSpec::recipe(side, side, channels);
        for (i, g) in spec.convs().iter().enumerate() {
            let shape = Conv2dShape::square(batch, g.in_h, g.in_w, g.in_c, g.out_c, KERNEL, STRIDE, 0);
            let label = format!(
                "{side}x{side}x{channels} conv{} {}x{}x{}->{}x{}x{}",
                i + 1,
                g.in_h,
                g.in_w,
                g.in_c,
                g.out_h,
                g.out_w,
                g.out_c
            );
            let input = rng.normals(shape.input_len(), 1.0);
            let kernel = rng.normals(shape.weight_len(), (2.0 / shape.k() as f32).sqrt());
            let bias = rng.normals(g.out_c, 0.1);
            let output = twin::conv_forward(&input, batch, g, &kernel, &bias);
            let grad = rng.normals(output.len(), 1.0);
            let up = |name: &str, v: &[f32]| ctx.upload(name, v);
            let (ib, ob, gb, kb, bb) = (
                up("input", &input)?,
                up("output", &output)?,
                up("grad", &grad)?,
                up("kernel", &kernel)?,
                up("bias", &bias)?,
            );
            let (d_kernel, d_bias, d_input) = (
                ctx.storage("d_kernel", kernel.len())?,
                ctx.storage("d_bias", g.out_c)?,
                ctx.storage("d_input", input.len())?,
            );
            let acts = ConvActivations { input: &ib, output: &ob, grad_output: &gb };
            let flops = Some(shape.flops());
            let forward_out = ctx.storage("forward", output.len())?;
            let buffers = Conv2dBuffers {
                input: &ib,
                weight: &kb,
                scale: None,
                bias: Some(&bb),
                residual: None,
                output: &forward_out,
            };
            let forward = conv2d(&ctx, &shape, &buffers, true, tuning.gemm_tiles(shape.m(), shape.out_c))?;
            row(&format!("{label} forward (conv2d)"), time(&ctx, &forward, args.reps)?, flops);
            let tiles = BackwardTiles::fitting(shape.k() + 1, shape.out_c);
            let dw = conv2d_backward_weight(&ctx, &shape, &acts, true, (&d_kernel).into(), (&d_bias).into(), tiles)?;
            row(&format!("{label} d_weight + d_bias {tiles:?}"), time(&ctx, &dw, args.reps)?, flops);
            if i > 0 {
                let tiles = BackwardTiles::fitting(shape.input_len() / shape.in_c, shape.in_c);
                let dx = conv2d_backward_input(&ctx, &shape, &acts, true, (&kb).into(), &d_input, tiles)?;
                row(&format!("{label} d_input {tiles:?}"), time(&ctx, &dx, args.reps)?, flops);
            }
            let mut cpu_ms: Vec<f64> = (0..args.reps.max(1))
                .map(|_| {
                    let start = Instant::now();
                    std::hint::black_box(twin::conv_backward(&input, &output, &grad, batch, g, &kernel, i > 0));
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            cpu_ms.sort_by(f64::total_cmp);
            let cpu_flops = shape.flops() * if i > 0 { 2.0 } else { 1.0 };
            row(&format!("{label} CPU twin conv_backward"), cpu_ms[cpu_ms.len() / 2], Some(cpu_flops));
        }
        let g3 = spec.convs()[2];
        let grad = ctx.upload("grad", &rng.normals(batch * g3.out_c, 1.0))?;
        let out = ctx.storage("d_input", batch * g3.out_pixels() * g3.out_c)?;
        let d = global_avg_pool_backward(&ctx, batch, g3.out_pixels(), g3.out_c, &grad, &out)?;
        row(&format!("{side}x{side}x{channels} global_avg_pool_backward"), time(&ctx, &d, args.reps)?, None);
    }
    for batch in [batch, 1000] {
        let shape = DenseShape { batch, inputs: 128, outputs: 8 };
        let x = ctx.upload("x", &rng.normals(batch * 128, 1.0))?;
        let gy = ctx.upload("grad_y", &rng.normals(batch * 8, 1.0))?;
        let kernel = ctx.upload("kernel", &rng.normals(128 * 8, 0.1))?;
        let bias = ctx.upload("bias", &rng.normals(8, 0.1))?;
        let (y, d_x) = (ctx.storage("y", batch * 8)?, ctx.storage("d_x", batch * 128)?);
        let (d_k, d_b) = (ctx.storage("d_kernel", 128 * 8)?, ctx.storage("d_bias", 8)?);
        let flops = Some(shape.flops());
        let label = format!("dense {batch}x128->8");
        row(
            &format!("{label} forward"),
            time(&ctx, &dense_forward(&ctx, &shape, &x, (&kernel).into(), (&bias).into(), &y)?, args.reps)?,
            flops,
        );
        row(
            &format!("{label} d_x"),
            time(&ctx, &dense_backward_input(&ctx, &shape, &gy, (&kernel).into(), &d_x)?, args.reps)?,
            flops,
        );
        let dw = dense_backward_weight(&ctx, &shape, &x, &gy, (&d_k).into(), (&d_b).into())?;
        row(&format!("{label} d_kernel + d_bias"), time(&ctx, &dw, args.reps)?, flops);
    }
    Ok(())
}
