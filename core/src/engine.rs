//! placeholder
/// placeholder
pub struct Engine;
/// placeholder
pub struct Config;
/// placeholder
pub struct Counters;
/// placeholder
pub struct Event;
/// placeholder
pub struct Outcome;
