//! Adapter selection and what the context reports.

use lookalike::{Context, Error};

#[test]
fn default_context_opens_and_describes_itself() {
    let ctx = Context::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let text = ctx.to_string();
    for line in ["adapter:", "backend:", "driver:", "max_storage_buffer_binding_size"] {
        assert!(text.contains(line), "`lookalike info` text lacks {line:?}:\n{text}");
    }
    assert!(ctx.max_binding_bytes() >= 128 << 20);
}

#[test]
fn an_unknown_adapter_name_is_a_typed_error_with_a_hint() {
    let err = Context::builder().adapter_name("no-such-adapter-xyz").build().err().expect("no adapter should match");
    assert!(matches!(err, Error::NoAdapter { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("lavapipe") && text.contains("no-such-adapter-xyz"), "{text}");
}
