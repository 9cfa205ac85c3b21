//! Every integration test of CronBox in one test binary, against the real `cronbox` binary,
//! PostgreSQL and NATS. One binary because each links the whole application: on two cores, 27 of
//! them linking was the slowest part of a test build.

mod common;

mod accounts;
mod admin;
mod api_input;
mod batch;
mod callbacks;
mod chaos_executor;
mod chaos_nats;
mod chaos_restarts;
mod chaos_targets;
mod crash;
mod event_subscriptions;
mod feed;
mod hardening;
mod job_defaults;
mod misfire;
mod notifications;
mod openapi;
mod overlap;
mod pipeline;
mod plans;
mod rate_limits;
mod rebuild;
mod retries;
mod signing;
mod ssrf;
mod tenancy;
mod web;
mod workspaces;
