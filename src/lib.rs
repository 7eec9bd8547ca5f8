#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod config;
pub mod conn;
pub mod dest;
pub mod director;
pub mod flow;
pub mod rewrite;
pub mod sched;
pub mod service;
pub mod sync;
pub mod time;
pub mod wire;

pub use dest::{Dest, DestConfig, DestId, DestSet, ForwardMethod};
pub use flow::{FlowKey, Protocol};
pub use sched::{Pool, Scheduler, SchedulerKind};
pub use time::Instant;
