//! The WIT versions the host speaks, one module each, as Zed's extension
//! host keeps them: a plugin built against any of them keeps loading when
//! a later one is added beside it (`since_v0_2_0.rs`, with its own world
//! facades converting to the same server types). `latest` is the version
//! new code is written against.

pub mod since_v0_1_0;

pub use since_v0_1_0 as latest;
