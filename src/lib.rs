//! customer-pulse: an event-sourced stream processor for customer interactions.
//!
//! The data path, in module order: `decode` bytes into typed `event`s, `fold` them into
//! per-customer state, `processor` batches the fold into one atomic commit of the `store`,
//! `kafka` and `replay` are the sources and sinks around it, `restore` rebuilds a partition from
//! the store's changelog, `telemetry` observes, `http` serves.
//! `config` turns what the user wrote into a validated configuration; `pipeline` wires the parts.
//! The analytics beside the fold: `risk` (with the models of `churn` and `fit`), `trends`,
//! `segments` and `rfm`; `demo` runs the whole job against an embedded broker.

pub mod aggregator;
pub mod churn;
pub mod config;
pub mod decode;
pub mod demo;
pub mod event;
pub mod facts;
pub mod fit;
pub mod fold;
pub mod generate;
pub mod http;
pub mod json;
pub mod kafka;
pub mod outbox;
pub mod pipeline;
pub mod processor;
pub mod replay;
pub mod restore;
pub mod rfm;
pub mod risk;
pub mod segments;
pub mod store;
pub mod tables;
pub mod telemetry;
pub mod trends;
