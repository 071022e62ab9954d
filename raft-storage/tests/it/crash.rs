//! Crash recovery (filled below).
