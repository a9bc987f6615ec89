//! The one integration-test binary. Each module is one area; `support` holds what
//! they share.

mod support;

mod api;
mod durability;
mod openapi;
mod replicas;
mod store;
