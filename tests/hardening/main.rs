//! The hardening issue's defects, each reproduced against the real binary, PostgreSQL and NATS:
//! one test binary for all of them (each binary links the whole application).

#[path = "../common/mod.rs"]
mod common;

mod deletion;
mod edges;
mod fairness;
mod limits;
mod login;
mod masking;
mod poison;
mod stalls;
mod streams;
