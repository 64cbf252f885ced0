//! Fuzzing every loader a user feeds files to: the index, ResNet50 weights, `.npy` arrays,
//! images and training data (IDX, CIFAR-10). Valid inputs are mutated (bit flips, byte sets,
//! truncations, splices of two valid files, duplicated and removed ranges, targeted header
//! edits declaring huge or overflowing sizes), at least 10,000 seeded cases per loader. Each
//! case must not panic, must finish in bounded time, must not allocate beyond a bound derived
//! from the input's length (a counting global allocator measures each case's peak), and must
//! give a correct result or a typed `lookalike::Error`.
//!
//! `cargo test --test fuzz -- --nocapture` prints the cases run and their outcomes per
//! loader. `LOOKALIKE_FUZZ_CASE=<loader>:<case>` reruns one case; `LOOKALIKE_FUZZ_SCALE=10`
//! runs ten times as many.

#[path = "fuzz/alloc.rs"]
mod alloc;
#[path = "fuzz/data.rs"]
mod data;
#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/images.rs"]
mod images;
#[path = "fuzz/index.rs"]
mod index;
#[path = "fuzz/mutate.rs"]
mod mutate;
#[path = "fuzz/npy.rs"]
mod npy;

#[path = "fuzz/weights.rs"]
mod weights;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;
