//! Usage analyzer (in progress).
