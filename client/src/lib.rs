//! cairn-client: the Rust client for Cairn and any etcd v3 endpoint.
//!
//! This crate is a placeholder until the client issue fills it. It will know
//! nothing of openraft or sled: it speaks only the etcd v3 gRPC API.
