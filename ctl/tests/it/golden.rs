//! Golden tests: cairnctl's output formats and error messages, exactly.
