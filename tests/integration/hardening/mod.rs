//! The hardening issue's defects, each reproduced against the real binary, PostgreSQL and NATS.

mod deletion;
mod edges;
mod fairness;
mod limits;
mod login;
mod masking;
mod poison;
mod stalls;
mod streams;
