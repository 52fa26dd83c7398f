//! TCP clients with deadlines (in progress).
