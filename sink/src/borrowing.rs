//! A prepared statement that binds texts and blobs where they are, without copying them.
//!
//! rusqlite binds every text and blob as `SQLITE_TRANSIENT`: SQLite allocates memory for the
//! value, copies it there, and frees it when the parameter is bound again. In a bulk load that is
//! one allocation, one copy and one release per text value, on the write thread, before the one
//! copy that matters (into the row's record). `SQLITE_STATIC` instead tells SQLite that the bytes
//! stay where they are, unchanged, for as long as they are bound. Measured on a 1,000,000-row
//! backfill: see the README's performance section.
//!
//! A [`BorrowingStatement`] makes that promise hold by construction. It is a borrow of a
//! [`PreparedStatement`] (prepared once per table and kept) that also borrows the values it is
//! given for `'v`, a lifetime that outlives it (the records of one write); when it is dropped the
//! statement is reset and its parameters cleared, so between writes SQLite holds no pointer at
//! all. That also lets a caller leave a parameter as the last execution bound it: what it points
//! at is still there. A value made for one execution (a date's text on the stack, a number's
//! digits) is bound with [`BorrowingStatement::text_copied`] (a date or time with
//! [`BorrowingStatement::temporal_copied`]), which SQLite copies as before.
//!
//! This is the only `unsafe` code in tidemark: the few FFI calls rusqlite does not wrap. Every
//! other use of SQLite goes through rusqlite.
#![allow(unsafe_code)]

use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::ptr::NonNull;

use rusqlite::{ffi, Connection};

/// A statement prepared on a connection and kept by whoever owns that connection. It must be
/// dropped (finalized) before the connection closes; if it is not, rusqlite's close fails and
/// says so (SQLite refuses to close a connection with live statements), nothing worse.
pub(crate) struct PreparedStatement {
    stmt: NonNull<ffi::sqlite3_stmt>,
}

// SAFETY: SQLite runs in multi-thread mode (rusqlite opens with SQLITE_OPEN_NO_MUTEX, and a
// `Connection` is `Send` but not `Sync`): a connection and its statements may move between
// threads as long as one thread uses them at a time, which `&mut` access guarantees for the owner
// of both.
unsafe impl Send for PreparedStatement {}

/// A [`PreparedStatement`] borrowed to bind texts and blobs that live for `'v` where they are and
/// run it; reset and its parameters cleared when dropped, which the borrow checker places before
/// `'v` ends.
pub(crate) struct BorrowingStatement<'s, 'v> {
    stmt: &'s mut PreparedStatement,
    /// Invariant in `'v`, so the statement cannot be handed values that live shorter than it.
    values: PhantomData<Invariant<'v>>,
}

/// A type invariant in `'v`.
type Invariant<'v> = fn(&'v [u8]) -> &'v [u8];

fn failure(db: *mut ffi::sqlite3, code: c_int) -> rusqlite::Error {
    // SAFETY: `db` is an open connection; the message is copied before any other call.
    let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned();
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(message))
}

/// Pointer and length for SQLite of `bytes`: an empty slice's pointer is dangling, so it is
/// given a static empty one (SQLite reads nothing, but wants a valid pointer).
fn bytes_for_sqlite(bytes: &[u8]) -> (*const std::ffi::c_void, u64) {
    if bytes.is_empty() {
        (b"".as_ptr().cast(), 0)
    } else {
        (bytes.as_ptr().cast(), bytes.len() as u64)
    }
}

impl PreparedStatement {
    pub(crate) fn prepare(conn: &Connection, sql: &str) -> rusqlite::Result<Self> {
        // SAFETY: the handle is used only while `conn` is borrowed, on this thread.
        let db = unsafe { conn.handle() };
        let len = c_int::try_from(sql.len()).map_err(|_| {
            rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_TOOBIG), None)
        })?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: `sql` is valid for `len` bytes; `stmt` receives the statement or NULL.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db,
                sql.as_ptr().cast(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(failure(db, rc));
        }
        let stmt = NonNull::new(stmt).ok_or_else(|| {
            rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_MISUSE),
                Some(format!("no statement in {sql:?}")),
            )
        })?;
        Ok(PreparedStatement { stmt })
    }

    /// Borrow the statement to bind values that live for `'v` and run it.
    pub(crate) fn borrowing<'v>(&mut self) -> BorrowingStatement<'_, 'v> {
        BorrowingStatement {
            stmt: self,
            values: PhantomData,
        }
    }
}

impl Drop for PreparedStatement {
    fn drop(&mut self) {
        // SAFETY: the statement was prepared by `prepare` and is finalized once, here.
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

impl<'v> BorrowingStatement<'_, 'v> {
    fn raw(&self) -> *mut ffi::sqlite3_stmt {
        self.stmt.stmt.as_ptr()
    }

    fn db(&self) -> *mut ffi::sqlite3 {
        // SAFETY: a valid statement knows its connection.
        unsafe { ffi::sqlite3_db_handle(self.raw()) }
    }

    fn bound(&self, rc: c_int) -> rusqlite::Result<()> {
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(failure(self.db(), rc))
        }
    }

    /// Run the statement once with the parameters as bound (a parameter never bound is NULL) and
    /// return how many rows it changed; the statement is reset for the next execution whatever
    /// the outcome.
    pub(crate) fn execute(&mut self) -> rusqlite::Result<usize> {
        // SAFETY: the statement is valid and every bound text or blob lives for `'v`.
        let outcome = match unsafe { ffi::sqlite3_step(self.raw()) } {
            ffi::SQLITE_DONE => {
                // SAFETY: as in `prepare`.
                let changed = unsafe { ffi::sqlite3_changes(self.db()) };
                Ok(usize::try_from(changed).unwrap_or(0))
            }
            ffi::SQLITE_ROW => Err(rusqlite::Error::ExecuteReturnedResults),
            rc => Err(failure(self.db(), rc)),
        };
        // SAFETY: the statement is valid. Its result code repeats the step's, already taken.
        unsafe { ffi::sqlite3_reset(self.raw()) };
        outcome
    }

    /// Parameter `index` (from 1) to NULL.
    pub(crate) fn null(&mut self, index: c_int) -> rusqlite::Result<()> {
        // SAFETY: a valid statement; an index out of range is an error code, not UB.
        let rc = unsafe { ffi::sqlite3_bind_null(self.raw(), index) };
        self.bound(rc)
    }

    pub(crate) fn int(&mut self, index: c_int, value: i64) -> rusqlite::Result<()> {
        // SAFETY: as in `null`.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.raw(), index, value) };
        self.bound(rc)
    }

    pub(crate) fn real(&mut self, index: c_int, value: f64) -> rusqlite::Result<()> {
        // SAFETY: as in `null`.
        let rc = unsafe { ffi::sqlite3_bind_double(self.raw(), index, value) };
        self.bound(rc)
    }

    /// A text that lives as long as the statement: bound where it is.
    pub(crate) fn text(&mut self, index: c_int, value: &'v str) -> rusqlite::Result<()> {
        self.text_with(index, value, ffi::SQLITE_STATIC())
    }

    /// A text made for one execution: SQLite copies it.
    pub(crate) fn text_copied(&mut self, index: c_int, value: &str) -> rusqlite::Result<()> {
        self.text_with(index, value, ffi::SQLITE_TRANSIENT())
    }

    /// A date or time's text, made for one execution: SQLite copies it. Its bytes are bound as
    /// they are (ASCII by construction), without a UTF-8 check.
    pub(crate) fn temporal_copied(
        &mut self,
        index: c_int,
        value: &tidemark_schemas::TemporalText,
    ) -> rusqlite::Result<()> {
        self.utf8_with(index, value.as_bytes(), ffi::SQLITE_TRANSIENT())
    }

    fn text_with(
        &mut self,
        index: c_int,
        value: &str,
        lifetime: ffi::sqlite3_destructor_type,
    ) -> rusqlite::Result<()> {
        self.utf8_with(index, value.as_bytes(), lifetime)
    }

    /// Bind `value`, UTF-8 text, as TEXT.
    fn utf8_with(
        &mut self,
        index: c_int,
        value: &[u8],
        lifetime: ffi::sqlite3_destructor_type,
    ) -> rusqlite::Result<()> {
        let (ptr, len) = bytes_for_sqlite(value);
        // SAFETY: `ptr` is UTF-8 for `len` bytes; with SQLITE_STATIC it lives for `'v`, which
        // outlives the statement; with SQLITE_TRANSIENT SQLite copies it now.
        let rc = unsafe {
            ffi::sqlite3_bind_text64(
                self.raw(),
                index,
                ptr.cast(),
                len,
                lifetime,
                ffi::SQLITE_UTF8 as u8,
            )
        };
        self.bound(rc)
    }

    /// A blob that lives as long as the statement: bound where it is.
    pub(crate) fn blob(&mut self, index: c_int, value: &'v [u8]) -> rusqlite::Result<()> {
        self.blob_with(index, value, ffi::SQLITE_STATIC())
    }

    /// A blob made for one execution: SQLite copies it.
    pub(crate) fn blob_copied(&mut self, index: c_int, value: &[u8]) -> rusqlite::Result<()> {
        self.blob_with(index, value, ffi::SQLITE_TRANSIENT())
    }

    fn blob_with(
        &mut self,
        index: c_int,
        value: &[u8],
        lifetime: ffi::sqlite3_destructor_type,
    ) -> rusqlite::Result<()> {
        let (ptr, len) = bytes_for_sqlite(value);
        // SAFETY: as in `utf8_with`; a zero-length blob is a blob, not NULL, since the pointer
        // is not NULL.
        let rc = unsafe { ffi::sqlite3_bind_blob64(self.raw(), index, ptr, len, lifetime) };
        self.bound(rc)
    }
}

impl Drop for BorrowingStatement<'_, '_> {
    fn drop(&mut self) {
        // SAFETY: the statement is valid; after this it holds no pointer to a borrowed value.
        unsafe {
            ffi::sqlite3_reset(self.raw());
            ffi::sqlite3_clear_bindings(self.raw());
        }
    }
}
