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
//! ## Layout
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

use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;

/// One slot: room for a `T` that may or may not hold one, writable through
/// a shared reference.
type Slot<T> = UnsafeCell<MaybeUninit<T>>;

/// The state the pool and every handle share.
struct Inner<T> {
    /// `capacity` slots, allocated once; never resized, so pointers into it
    /// stay valid for as long as the `Inner` lives.
    slots: Box<[Slot<T>]>,
    /// Slots given back by dropped handles, to be reused first (last freed,
    /// first reused: its memory is the most likely to still be in cache).
    /// Its capacity is reserved up front, so `push` never allocates.
    free: RefCell<Vec<usize>>,
    /// Slots `next_unused..capacity` have never held a value.
    next_unused: Cell<usize>,
}

impl<T> Inner<T> {
    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn len(&self) -> usize {
        self.next_unused.get() - self.free.borrow().len()
    }

    /// A pointer to slot `i`'s value (initialised or not).
    fn slot_ptr(&self, i: usize) -> NonNull<T> {
        // `UnsafeCell::get` gives a `*mut` without claiming any access yet;
        // `MaybeUninit<T>` has the same layout as `T`.
        NonNull::new(self.slots[i].get().cast::<T>()).expect("a slot is never at address 0")
    }

    /// Takes a free slot, if there is one.
    fn take_slot(&self) -> Option<usize> {
        if let Some(i) = self.free.borrow_mut().pop() {
            return Some(i);
        }
        let next = self.next_unused.get();
        if next < self.capacity() {
            self.next_unused.set(next + 1);
            Some(next)
        } else {
            None
        }
    }

    /// Gives slot `i` back. Its value must already have been dropped or
    /// moved out.
    fn give_back(&self, i: usize) {
        // Never reallocates: at most `capacity` slots can be free, and that
        // much room was reserved when the pool was built.
        self.free.borrow_mut().push(i);
    }
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
        // Collecting an exact-size iterator into a boxed slice allocates
        // once, with `T`'s alignment.
        let slots: Box<[Slot<T>]> = (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect();
        Pool {
            inner: Rc::new(Inner {
                slots,
                free: RefCell::new(Vec::with_capacity(capacity)),
                next_unused: Cell::new(0),
            }),
        }
    }

    /// Moves `value` into a free slot and returns a handle to it, or gives
    /// `value` back as `Err` if every slot is taken. Never allocates.
    pub fn try_alloc(&self, value: T) -> Result<Handle<T>, T> {
        let Some(slot) = self.inner.take_slot() else {
            return Err(value);
        };
        let ptr = self.inner.slot_ptr(slot);
        // SAFETY: `take_slot` just took `slot` off the free set, so no
        // handle refers to it and it holds no value: writing does not
        // overwrite a live value (nothing to drop) and races with no reader.
        // The pointer is aligned and in bounds: it comes from the boxed
        // slice of `MaybeUninit<T>`.
        unsafe { ptr.write(value) };
        Ok(Handle {
            inner: Rc::clone(&self.inner),
            ptr,
            slot,
        })
    }

    /// How many values are alive in the pool (handles not yet dropped).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no value is alive in the pool.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many values the pool can hold at once.
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// How many more values fit right now: `capacity() - len()`.
    pub fn available(&self) -> usize {
        self.capacity() - self.len()
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// An owned value living in a [`Pool`] slot. Derefs to the value; dropping
/// it drops the value and returns the slot to the pool. Keeps the pool's
/// storage alive (see the crate docs).
pub struct Handle<T> {
    /// Keeps the storage alive, and is where the slot goes back on drop.
    inner: Rc<Inner<T>>,
    /// The value, cached so that deref is one load (no bounds check, no
    /// index arithmetic). Valid while `inner` lives: the slots never move.
    ptr: NonNull<T>,
    /// Which slot, for giving it back.
    slot: usize,
}

impl<T> Handle<T> {
    /// The index of this value's slot, in `0..capacity`. Two live handles
    /// never share a slot; a slot given back may be handed out again.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Moves the value out of the pool and frees its slot, without dropping
    /// the value.
    pub fn into_inner(this: Handle<T>) -> T {
        // `ManuallyDrop` so our `Drop` (which would drop the value) does not
        // run; the `Rc` inside is released by hand below.
        let this = std::mem::ManuallyDrop::new(this);
        // SAFETY: a live handle's slot holds an initialised value, and this
        // handle is the only one with this slot. Reading moves the value out;
        // the slot is given back right after, so nobody reads it again
        // (and `Drop` never runs for this handle).
        let value = unsafe { this.ptr.read() };
        this.inner.give_back(this.slot);
        // SAFETY: `this.inner` is read exactly once and never used again,
        // so the reference count it holds is released exactly once.
        drop(unsafe { std::ptr::read(&this.inner) });
        value
    }
}

impl<T> Deref for Handle<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the slot holds an initialised value while this handle
        // lives (the invariant), `inner` keeps the storage alive, and a
        // shared borrow of the handle lends out only a shared borrow of
        // the value.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for Handle<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; and this handle is the only way to reach
        // this slot, so `&mut self` makes the borrow exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        // Drop the value first, then give the slot back: if `T::drop`
        // allocates from this same pool, it must not be handed the slot it
        // is still being dropped from. (If `T::drop` panics, the slot is
        // leaked: safe, just one slot fewer.)
        // SAFETY: the slot holds an initialised value (the invariant) that
        // nobody else can reach; after this line it is uninitialised, and
        // the slot is marked free at once, so it is never dropped again.
        unsafe { self.ptr.drop_in_place() };
        self.inner.give_back(self.slot);
        // `self.inner` (the Rc) is dropped after this: if it was the last
        // reference, the storage is freed now, with every slot free.
    }
}

impl<T: fmt::Debug> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("slot", &self.slot)
            .field("value", &**self)
            .finish()
    }
}
