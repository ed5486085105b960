//! Values the provider sent in their type's binary (send/recv) form: decoded with the receive
//! function, and turned into text where the SQL path and conflict reports need it.

use super::sql::RemoteRel;
use pgrx::pg_sys;
use pgrx::prelude::*;
use spock_proto::Value;

/// A function's call information, kept from call to call. The function manager and the
/// function itself write into it (`fn_extra` caches), so it is handed out only as a raw
/// pointer to its cell, never through a shared reference.
pub struct CallInfo(std::cell::UnsafeCell<pg_sys::FmgrInfo>);

impl CallInfo {
    /// The call information of function `func`, its extra data kept in `context`.
    pub fn new(func: pg_sys::Oid, context: pg_sys::MemoryContext) -> CallInfo {
        let info = CallInfo(std::cell::UnsafeCell::new(pg_sys::FmgrInfo::default()));
        // SAFETY: a catalog lookup filling the cell, which nothing else refers to yet.
        unsafe { pg_sys::fmgr_info_cxt(func, info.as_ptr(), context) };
        info
    }

    pub fn as_ptr(&self) -> *mut pg_sys::FmgrInfo {
        self.0.get()
    }
}

/// The receive function of `typid` (its call data kept in `context`) and its type parameter.
pub fn receive_info(typid: pg_sys::Oid, context: pg_sys::MemoryContext) -> (CallInfo, pg_sys::Oid) {
    let mut recv = pg_sys::InvalidOid;
    let mut param = pg_sys::InvalidOid;
    // SAFETY: a catalog lookup.
    unsafe { pg_sys::getTypeBinaryInputInfo(typid, &mut recv, &mut param) };
    (CallInfo::new(recv, context), param)
}

/// The datum of `bytes`, read by `typid`'s receive function (in the current memory context).
pub fn receive(typid: pg_sys::Oid, typmod: i32, bytes: &[u8]) -> pg_sys::Datum {
    // SAFETY: reading the current memory context.
    let (info, param) = receive_info(typid, unsafe { pg_sys::CurrentMemoryContext });
    receive_with(&info, param, typmod, bytes)
}

/// The datum of `bytes`, read by the receive function `info`.
pub fn receive_with(
    info: &CallInfo,
    param: pg_sys::Oid,
    typmod: i32,
    bytes: &[u8],
) -> pg_sys::Datum {
    // SAFETY: the receive function on a NUL-terminated palloc'd copy wrapped as a StringInfo
    // it may read to its end.
    unsafe {
        let data = pg_sys::palloc(bytes.len() + 1).cast::<u8>();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
        *data.add(bytes.len()) = 0;
        let mut buf = pg_sys::StringInfoData {
            data: data.cast(),
            len: bytes.len() as i32,
            maxlen: bytes.len() as i32 + 1,
            cursor: 0,
        };
        pg_sys::ReceiveFunctionCall(info.as_ptr(), &mut buf, param, typmod)
    }
}

/// `d`'s text form by `typid`'s output function.
pub fn output(typid: pg_sys::Oid, d: pg_sys::Datum) -> Vec<u8> {
    // SAFETY: a catalog lookup and the output function of the datum's own type.
    unsafe {
        let mut out = pg_sys::InvalidOid;
        let mut varlena = false;
        pg_sys::getTypeOutputInfo(typid, &mut out, &mut varlena);
        let s = pg_sys::OidOutputFunctionCall(out, d);
        let text = std::ffi::CStr::from_ptr(s).to_bytes().to_vec();
        pg_sys::pfree(s.cast());
        text
    }
}

/// `values` with every binary value turned into text (for the SQL path). The provider's type
/// decodes it when built in; otherwise the local column's type does.
pub fn as_text(rel: &RemoteRel, values: &[Value]) -> Vec<Value> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Binary(b) => {
                let c = &rel.columns[i];
                let typid = if c.type_oid < pg_sys::FirstNormalObjectId {
                    pg_sys::Oid::from(c.type_oid)
                } else {
                    pg_sys::Oid::from(rel.local_type_oids[i])
                };
                Value::Text(output(typid, receive(typid, c.typmod, b)))
            }
            Value::Internal(_) => {
                error!("internal-format values are not accepted by this apply worker")
            }
            v => v.clone(),
        })
        .collect()
}

/// `as_text` for reports: when a value does not decode, the binary values are left out
/// instead of raising (the failed decoding is rolled back in a subtransaction).
pub fn as_text_for_report(rel: &RemoteRel, values: &[Value]) -> Vec<Value> {
    if !values.iter().any(|v| matches!(v, Value::Binary(_))) {
        return values.to_vec();
    }
    // SAFETY: a subtransaction of the apply transaction, ended on both paths; the caller's
    // memory context is restored afterwards.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        let converted =
            PgTryBuilder::new(std::panic::AssertUnwindSafe(|| Some(as_text(rel, values))))
                .catch_others(|_| None)
                .execute();
        if converted.is_some() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        converted.unwrap_or_else(|| values.to_vec())
    }
}
