"""Reading history back: audit (history, state at an LSN or a time), verify (re-derive
everything from the log and compare), crash (fault injection), model (the reference
model for hypothesis stateful tests)."""
