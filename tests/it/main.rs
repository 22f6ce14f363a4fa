//! One integration-test binary (one link): modules by feature. Tests that need the broker start a
//! real Tansu on loopback (see `support`); nothing is skipped.

mod aggregation;
mod aligned;
mod broker;
mod catalogue;
mod cfpb;
mod changelog;
mod crash;
mod demo;
mod deploy;
mod end_to_end;
mod faults;
mod fixed;
mod hostile;
mod kafka_smoke;
mod limits;
mod plain_front;
mod privacy;
mod prometheus;
mod real_data;
mod replay;
mod risk;
mod scale;
mod scenario;
mod segments;
mod store_faults;
mod support;
mod trends;
mod wire;
