//! Model-based tests (filled below).
