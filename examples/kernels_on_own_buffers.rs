//! Two kernels on buffers of your own: scores = queries · rowsᵀ by the matmul kernel, then
//! the 3 best rows per query by the top-k kernel, recorded into one encoder of yours and
//! checked against the CPU twins.
//!
//! cargo run --release --example kernels_on_own_buffers

use lookalike::ops::matmul::{matmul, MatmulShape};
use lookalike::ops::topk::{TopK, TopKInput, TopKOutput};
use lookalike::ops::Tuning;
use lookalike::wgpu::util::DeviceExt;
use lookalike::{cpu, wgpu, Context};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    let device = ctx.device();
    let (queries, rows, dim, k) = (2, 37, 5, 3);
    let a: Vec<f32> = (0..queries * dim).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    let b: Vec<f32> = (0..rows * dim).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();

    // Your buffers: storage, readable back (COPY_SRC).
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let upload = |label, data: &[f32]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &data.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>(),
            usage,
        })
    };
    let empty = |label, len: usize| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: 4 * len as u64,
            usage,
            mapped_at_creation: false,
        })
    };
    let (query_buffer, row_buffer) = (upload("queries", &a), upload("rows", &b));
    let scores = empty("scores", queries * rows);
    let (best_scores, best_rows) = (empty("best scores", queries * k), empty("best rows", queries * k));

    // The kernels: a matmul against the transposed rows, then top-k of each score row, with
    // launch shapes from the built-in table for this adapter.
    let tuning = Tuning::for_adapter(ctx.adapter_info());
    let shape = MatmulShape { m: queries, n: rows, k: dim, b_transposed: true };
    let tiles = tuning.gemm_tiles(queries, rows);
    let product = matmul(&ctx, &shape, &query_buffer, &row_buffer, &scores, tiles)?;
    let input = TopKInput::Scores { scores: &scores, index_base: 0 };
    let output = TopKOutput::dense(&best_scores, &best_rows, k);
    let top = TopK::new(&ctx, input, queries, rows, k, &output, tuning.topk_workgroup)?;

    // Recorded into your own encoder and submitted on the context's queue.
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        product.encode(&mut pass);
        for dispatch in top.dispatches() {
            dispatch.encode(&mut pass);
        }
    }
    ctx.queue().submit([encoder.finish()]);

    // Read back and compare with the CPU twins.
    let got_scores = ctx.read(&scores, queries * rows)?;
    let want_scores = cpu::matmul(&shape, &a, &b)?;
    for (got, want) in got_scores.iter().zip(&want_scores) {
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "score {got} vs {want}");
    }
    let (_, want_rows) = cpu::topk::topk(&got_scores, queries, rows, k)?;
    let got_rows = ctx.read_u32(&best_rows, queries * k)?;
    assert_eq!(got_rows, want_rows);
    println!("best {k} rows of each query: {got_rows:?}");
    Ok(())
}
