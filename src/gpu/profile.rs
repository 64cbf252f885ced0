//! GPU time per stage from timestamp queries, where the adapter has them.

use crate::error::{Error, Result};
use crate::gpu::pipeline::scoped;
use crate::gpu::{Context, Dispatch};

/// One named stage: the dispatches it records, in order.
pub type Stage<'a> = (&'static str, Vec<&'a Dispatch>);

impl Context {
    /// Whether [`Context::stage_times`] can measure on this adapter.
    pub fn has_timestamps(&self) -> bool {
        self.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Runs all `stages` in one submit, each as its own compute pass whose beginning and end
    /// write a timestamp, and returns each stage's GPU time in milliseconds (the gap between
    /// its two timestamps: no submit or readback overhead). `None` when the adapter has no
    /// timestamp queries.
    pub fn stage_times(&self, stages: &[Stage]) -> Result<Option<Vec<(&'static str, f64)>>> {
        if !self.has_timestamps() {
            return Ok(None);
        }
        if stages.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let count = 2 * stages.len() as u32;
        let resolve_bytes = 8 * count as u64;
        let readback = self.readback(2 * count as usize);
        scoped(
            self,
            || "recording timestamped stages".into(),
            || {
                let queries = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("stage timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                });
                let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("resolved timestamps"),
                    size: resolve_bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let mut encoder =
                    self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("stages") });
                for (i, (name, dispatches)) in stages.iter().enumerate() {
                    let writes = wgpu::ComputePassTimestampWrites {
                        query_set: &queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    };
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(name),
                        timestamp_writes: Some(writes),
                    });
                    for d in dispatches {
                        d.encode(&mut pass);
                    }
                }
                encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
                encoder.copy_buffer_to_buffer(&resolved, 0, &readback.buffer, 0, resolve_bytes);
                self.queue.submit([encoder.finish()]);
            },
        )?;
        let words = self.read_staging(&readback.buffer, 2 * count as usize)?;
        let ticks: Vec<u64> =
            words.chunks_exact(2).map(|w| u64::from(w[0].to_bits()) | (u64::from(w[1].to_bits()) << 32)).collect();
        let ns_per_tick = f64::from(self.queue.get_timestamp_period());
        stages
            .iter()
            .zip(ticks.chunks_exact(2))
            .map(|((name, _), t)| {
                let ticks = t[1].checked_sub(t[0]).ok_or_else(|| Error::Gpu {
                    context: format!("timing stage {name}"),
                    message: format!("end timestamp {} precedes start {}", t[1], t[0]),
                })?;
                Ok((*name, ticks as f64 * ns_per_tick / 1e6))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Median time in milliseconds of one run of `dispatches` over `reps` runs (after one
    /// warm-up): GPU time between timestamps where the adapter has them
    /// ([`Context::has_timestamps`]), else the wall clock of a submit and wait.
    pub fn median_ms(&self, dispatches: &[&Dispatch], reps: usize) -> Result<f64> {
        let stage: [Stage; 1] = [("timed", dispatches.to_vec())];
        self.run(dispatches)?;
        let mut times = Vec::with_capacity(reps.max(1));
        for _ in 0..reps.max(1) {
            times.push(match self.stage_times(&stage)? {
                Some(t) => t[0].1,
                None => {
                    let start = std::time::Instant::now();
                    self.run(dispatches)?;
                    start.elapsed().as_secs_f64() * 1e3
                }
            });
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}
