//! Protocol tests of the handlers, without dockerd.
