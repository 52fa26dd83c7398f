//! A tiny slab: a `Vec` of slots plus a free list threaded through the empty
//! ones, so that inserting reuses the slot of a closed connection and its
//! index can serve as the connection's mio `Token`.
//!
//! Why not a `HashMap<Token, Conn>`? Every event would hash its token, and
//! the map would reallocate as it grows and shrinks. A slab looks a
//! connection up with one bounds check, allocates only when the number of
//! *simultaneous* connections reaches a new high, and keeps the tokens small
//! and dense. This is what the `slab` crate (used by mio's own examples and
//! by Tokio) does, in about forty lines.

/// One slot: either a value, or a link to the next free slot.
enum Slot<T> {
    Full(T),
    /// Index of the next free slot, or `usize::MAX` at the end of the list.
    Free(usize),
}

/// The end of the free list.
const NONE: usize = usize::MAX;

pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    /// Index of the first free slot (`NONE` when every slot is full). The
    /// most recently freed slot is reused first: its memory is still warm
    /// in the cache.
    free: usize,
}

impl<T> Slab<T> {
    pub fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: NONE,
        }
    }

    /// The index the next [`Slab::insert`] will use, so a caller can
    /// register a socket under its token before storing it.
    pub fn vacant_key(&self) -> usize {
        if self.free == NONE {
            self.slots.len()
        } else {
            self.free
        }
    }

    /// Stores `value` and returns its index.
    pub fn insert(&mut self, value: T) -> usize {
        let key = self.vacant_key();
        if key == self.slots.len() {
            self.slots.push(Slot::Full(value));
        } else {
            match std::mem::replace(&mut self.slots[key], Slot::Full(value)) {
                Slot::Free(next) => self.free = next,
                Slot::Full(_) => unreachable!("the free list points at a full slot"),
            }
        }
        key
    }

    /// Removes and returns the value at `key`, if there is one.
    pub fn remove(&mut self, key: usize) -> Option<T> {
        let slot = self.slots.get_mut(key)?;
        if matches!(slot, Slot::Free(_)) {
            return None;
        }
        match std::mem::replace(slot, Slot::Free(self.free)) {
            Slot::Full(value) => {
                self.free = key;
                Some(value)
            }
            Slot::Free(_) => unreachable!("checked above"),
        }
    }

    /// Every value with its index (a broadcast walks them all).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(key, slot)| match slot {
                Slot::Full(value) => Some((key, value)),
                Slot::Free(_) => None,
            })
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.slots.get_mut(key) {
            Some(Slot::Full(value)) => Some(value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn reuses_freed_slots_newest_first() {
        let mut slab = Slab::new();
        let a = slab.insert('a');
        let b = slab.insert('b');
        let c = slab.insert('c');
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(slab.remove(b), Some('b'));
        assert_eq!(slab.remove(b), None);
        assert_eq!(slab.remove(a), Some('a'));
        assert_eq!(slab.vacant_key(), a);
        assert_eq!(slab.insert('d'), a);
        assert_eq!(slab.insert('e'), b);
        assert_eq!(slab.insert('f'), 3);
        assert_eq!(slab.get_mut(c), Some(&mut 'c'));
        let all: Vec<(usize, char)> = slab.iter_mut().map(|(k, v)| (k, *v)).collect();
        assert_eq!(all, [(0, 'd'), (1, 'e'), (2, 'c'), (3, 'f')]);
    }
}
