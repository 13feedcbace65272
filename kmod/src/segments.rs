//@ stage 1
//! Segment descriptors and selectors (stage 01).
