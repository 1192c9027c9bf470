//! The Kubernetes Container Runtime Interface, `runtime.v1`: messages, the `RuntimeService` and
//! `ImageService` servers and clients, generated from `proto/api.proto` (k8s.io/cri-api v0.36.3).

#![allow(clippy::all, clippy::pedantic, rustdoc::all)]

pub mod v1 {
    tonic::include_proto!("runtime.v1");
}
