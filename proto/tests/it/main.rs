//! Integration tests for cairn-proto: the wire facts that make it etcd.
//!
//! Each test pins bytes or names that an etcd peer depends on, so a
//! renumbered field or a renamed service fails here rather than against a
//! real client.

mod services;
mod wire;
