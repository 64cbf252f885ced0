// Placeholder: being written.
@compute @workgroup_size(1)
fn main() {}
