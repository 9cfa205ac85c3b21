//! The web app: handler tests over plain HTTP (status, roles, anti-forgery, escaping) and
//! journeys in a real headless Chromium (see `common::browser`).

mod journey;
mod journeys;
mod pages;
