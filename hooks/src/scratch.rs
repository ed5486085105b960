//! Memory for work done once per item (a row change applied or sent), emptied around each
//! item, so the memory of a transaction does not grow with its size.

use pgrx::pg_sys;
use std::cell::Cell;
use std::ffi::CStr;

/// A memory context made at first use, a long-lived child of TopMemoryContext.
pub struct Scratch {
    name: &'static CStr,
    context: Cell<pg_sys::MemoryContext>,
}

impl Scratch {
    pub const fn new(name: &'static CStr) -> Scratch {
        Scratch {
            name,
            context: Cell::new(std::ptr::null_mut()),
        }
    }

    /// Runs `f` with this context current, emptied before and after. Nothing `f` makes there
    /// may outlive it (executor state, caches and trigger queues keep contexts of their own);
    /// after an error the abort resets the current context and the next item empties this one.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.context.get().is_null() {
            // SAFETY: a child of TopMemoryContext, never deleted.
            self.context.set(unsafe {
                pg_sys::AllocSetContextCreateExtended(
                    pg_sys::TopMemoryContext,
                    self.name.as_ptr(),
                    pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                    pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                    pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
                )
            });
        }
        let context = self.context.get();
        // SAFETY: the context is ours; the caller's context comes back afterwards.
        let previous = unsafe {
            pg_sys::MemoryContextReset(context);
            pg_sys::MemoryContextSwitchTo(context)
        };
        let result = f();
        // SAFETY: as above.
        unsafe {
            pg_sys::MemoryContextSwitchTo(previous);
            pg_sys::MemoryContextReset(context);
        }
        result
    }
}
