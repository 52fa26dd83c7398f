//! # Lab 08: a memory pool
//!
//! A fixed-capacity object pool (a *slab*): one block of memory for
//! `capacity` values of type `T`, allocated once when the pool is built.
//! [`Pool::try_alloc`] moves a value into a free slot and returns an owned
//! [`Handle`] that derefs to it; dropping the handle drops the value and
//! gives the slot back. After construction the pool never touches the heap
//! allocator again: no `malloc` on the hot path, no fragmentation, and a
//! hard limit on memory that a burst of requests cannot exceed.
//!
//! Servers use the same idea everywhere: nginx's and PostgreSQL's memory
//! contexts, the kernel's slab allocator for `struct file` and socket
//! buffers, connection and buffer pools in every database driver.
//!
//! ## A suggested layout
//!
//! ```text
//! Pool<T> ──Rc──┐
//! Handle<T> ──Rc┼──> Inner<T> { slots: [UnsafeCell<MaybeUninit<T>>; capacity],
//! Handle<T> ──Rc┘               free: Vec<usize> (capacity reserved up front),
//!                               next_unused: usize }
//! ```
//!
//! - `slots` is one boxed slice: `Box<[_]>` allocates with `T`'s size and
//!   alignment, so every slot is aligned for `T`, even a
//!   `#[repr(align(4096))]` one, and never moves (handles keep pointers into
//!   it). A slot is `MaybeUninit` because most slots hold no value most of
//!   the time, and `UnsafeCell` because a value is written and read through
//!   a shared `Inner`.
//! - Free slots are found in O(1) two ways: slots never used yet are
//!   `next_unused..capacity` (so building a pool does not have to list them
//!   all), and slots given back are on the `free` stack. The stack reserves
//!   room for every slot when the pool is built, so pushing onto it never
//!   reallocates.
//! - The number of live values is `next_unused - free.len()`.
//!
//! ## Who owns the storage: `Rc`, not a borrow
//!
//! Each [`Handle`] holds an `Rc` of the pool's inner state, so a handle can
//! be returned from a function, stored in a struct or outlive the [`Pool`]
//! value it came from: **handles keep the storage alive**. Dropping the
//! `Pool` drops only its own reference; values still in handles stay valid,
//! and the memory is freed when the last handle is dropped. When the storage
//! is finally freed, every slot is free (each live value holds a reference),
//! so no value can be dropped twice or forgotten.
//!
//! The alternative is a handle that borrows the pool, `Handle<'a, T>`
//! holding `&'a Pool<T>`. It is free at run time (no counter to bump) and
//! the borrow checker proves that the pool outlives its handles, but every
//! struct that keeps a handle then carries the `'a`, and the pool must be
//! created in a scope that outlives all of its users. The `Rc` costs an
//! increment and a decrement per allocation, a few nanoseconds.
//!
//! `Rc` and `Cell` make the pool single-threaded (`!Send`, `!Sync`), which
//! is what a per-thread pool (or a per-core one, as in thread-per-core
//! servers) wants. Sharing one between threads needs `Arc` and a lock, or a
//! lock-free free list: see the README's "Going further".
//!
//! ## Unsafe
//!
//! Reading and writing the slots needs `unsafe`: the compiler cannot know
//! which slots hold values. The invariant that makes it sound: **a slot is
//! initialised exactly when one live `Handle` has its index**; it is neither
//! in `free` nor at or past `next_unused`. Each `unsafe` block says which
//! part of that it relies on.
//!
//! Zero-sized types work unchanged: the slots take no memory, every handle
//! points at the same (dangling, aligned) address, and the pool still counts
//! them and drops each value once.

//! ## Your task
//!
//! Replace every `todo!()` and fill in `Inner<T>` (the fields below are
//! placeholders). Keep the public signatures and the contract in the doc
//! comments: they are what the tests call and check. The starter's
//! `Drop for Handle` does nothing on purpose (a `todo!()` in `drop` would
//! abort the whole test run); making it return the slot is part of the lab.
//! Run `cargo test` in this folder to be graded, `cargo bench` to race your
//! pool against `Box::new` (README.md has the details, hints.md a few
//! hints).

#![allow(unused)]

use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;

/// The state the pool and every handle share: the slots and the record of
/// which ones are free. Design it (see "A suggested layout" above).
struct Inner<T> {
    /// A placeholder so the starter compiles: replace it with your fields.
    _todo: PhantomData<T>,
}

/// A fixed-capacity pool of `T` values; see the crate docs.
pub struct Pool<T> {
    inner: Rc<Inner<T>>,
}

impl<T> Pool<T> {
    /// A pool with room for `capacity` values, allocated now: the only heap
    /// allocations the pool ever makes (zero for a zero-sized `T`, or a
    /// zero capacity, apart from the shared state itself).
    pub fn with_capacity(capacity: usize) -> Pool<T> {
        todo!("allocate the slots and the free list, once")
    }

    /// Moves `value` into a free slot and returns a handle to it, or gives
    /// `value` back as `Err` if every slot is taken. Never allocates.
    pub fn try_alloc(&self, value: T) -> Result<Handle<T>, T> {
        todo!("take a free slot, write the value into it, return a handle")
    }

    /// How many values are alive in the pool (handles not yet dropped).
    pub fn len(&self) -> usize {
        todo!("count the live values")
    }

    /// Whether no value is alive in the pool.
    pub fn is_empty(&self) -> bool {
        todo!("len() == 0")
    }

    /// How many values the pool can hold at once.
    pub fn capacity(&self) -> usize {
        todo!("the number of slots")
    }

    /// How many more values fit right now: `capacity() - len()`.
    pub fn available(&self) -> usize {
        todo!("capacity() - len()")
    }
}

/// An owned value living in a [`Pool`] slot. Derefs to the value; dropping
/// it drops the value and returns the slot to the pool. Keeps the pool's
/// storage alive (see the crate docs).
pub struct Handle<T> {
    /// Keeps the storage alive, and is where the slot goes back on drop.
    inner: Rc<Inner<T>>,
    /// Which slot holds the value.
    slot: usize,
}

impl<T> Handle<T> {
    /// The index of this value's slot, in `0..capacity`. Two live handles
    /// never share a slot; a slot given back may be handed out again.
    pub fn slot(&self) -> usize {
        todo!("the slot index")
    }

    /// Moves the value out of the pool and frees its slot, without dropping
    /// the value.
    pub fn into_inner(this: Handle<T>) -> T {
        todo!("read the value out, free the slot, and make sure Drop does not run")
    }
}

impl<T> Deref for Handle<T> {
    type Target = T;

    fn deref(&self) -> &T {
        todo!("a shared reference to the value in the slot")
    }
}

impl<T> DerefMut for Handle<T> {
    fn deref_mut(&mut self) -> &mut T {
        todo!("an exclusive reference to the value in the slot")
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        // Deliberately empty in the starter: a todo!() here would abort the
        // test binary. Drop the value in the slot, then give the slot back.
    }
}
