//! Pure authorization decisions over the registry policy (being written).
