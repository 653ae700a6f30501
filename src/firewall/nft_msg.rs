//! The nftables backend's pure half: the constants of `linux/netfilter/nf_tables.h` it
//! uses, the set names and element encoding, and the builders and parsers of every message
//! and batch [`super::nft::Nft`] exchanges with the kernel (elements added, deleted and
//! dumped; the table and sets read). No socket and no I/O: each builder is golden-tested
//! against the bytes `nft` itself sends.
//!
//! Must not decide anything: which elements to add or delete, and when, is the
//! transaction's ([`super::nft`]); what a hole may be is the core's.

use std::net::IpAddr;
use std::time::Duration;

use ftp6proxy_core::{Family, HoleSpec, Slot};

use super::Error;
use crate::netlink::{
    self, attrs, nfnl_type, split_nfgenmsg, MsgBuilder, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};

// enum nf_tables_msg_types
/// `NFT_MSG_GETTABLE`.
pub const NFT_MSG_GETTABLE: u8 = 1;
/// `NFT_MSG_NEWSET` (also the type of the answer to GETSET).
pub const NFT_MSG_NEWSET: u8 = 9;
/// `NFT_MSG_GETSET`.
pub const NFT_MSG_GETSET: u8 = 10;
/// `NFT_MSG_NEWSETELEM`.
pub const NFT_MSG_NEWSETELEM: u8 = 12;
/// `NFT_MSG_GETSETELEM`.
pub const NFT_MSG_GETSETELEM: u8 = 13;
/// `NFT_MSG_DELSETELEM`; without `NFTA_SET_ELEM_LIST_ELEMENTS` it flushes the set.
pub const NFT_MSG_DELSETELEM: u8 = 14;

// enum nft_table_attributes
/// `NFTA_TABLE_NAME`.
pub const NFTA_TABLE_NAME: u16 = 1;

// enum nft_set_attributes
/// `NFTA_SET_TABLE`.
pub const NFTA_SET_TABLE: u16 = 1;
/// `NFTA_SET_NAME`.
pub const NFTA_SET_NAME: u16 = 2;
/// `NFTA_SET_FLAGS` (`NFT_SET_*`, be32).
pub const NFTA_SET_FLAGS: u16 = 3;
/// `NFTA_SET_KEY_TYPE` (be32): the datatype id `nft` stored; the kernel does not interpret it.
pub const NFTA_SET_KEY_TYPE: u16 = 4;
/// `NFTA_SET_KEY_LEN` (be32): the key length in bytes.
pub const NFTA_SET_KEY_LEN: u16 = 5;

// enum nft_set_flags
/// `NFT_SET_CONSTANT`.
pub const NFT_SET_CONSTANT: u32 = 0x2;
/// `NFT_SET_INTERVAL`: elements would need a key end; not ours.
pub const NFT_SET_INTERVAL: u32 = 0x4;
/// `NFT_SET_MAP`.
pub const NFT_SET_MAP: u32 = 0x8;
/// `NFT_SET_TIMEOUT`: elements may carry a timeout.
pub const NFT_SET_TIMEOUT: u32 = 0x10;
/// `NFT_SET_OBJECT`.
pub const NFT_SET_OBJECT: u32 = 0x40;

// enum nft_set_elem_list_attributes
/// `NFTA_SET_ELEM_LIST_TABLE`.
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
/// `NFTA_SET_ELEM_LIST_SET`.
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
/// `NFTA_SET_ELEM_LIST_ELEMENTS` (nested list of `NFTA_LIST_ELEM`).
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
/// `NFTA_LIST_ELEM`.
pub const NFTA_LIST_ELEM: u16 = 1;

// enum nft_set_elem_attributes
/// `NFTA_SET_ELEM_KEY` (nested `NFTA_DATA_VALUE`).
pub const NFTA_SET_ELEM_KEY: u16 = 1;
/// `NFTA_SET_ELEM_EXPIRATION`: milliseconds left before the element times out (dumps).
pub const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
/// `NFTA_SET_ELEM_TIMEOUT` (be64, milliseconds).
pub const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
/// `NFTA_SET_ELEM_USERDATA` (libnftnl udata TLVs).
pub const NFTA_SET_ELEM_USERDATA: u16 = 6;

// enum nft_data_attributes
/// `NFTA_DATA_VALUE`.
pub const NFTA_DATA_VALUE: u16 = 1;

/// `NFTNL_UDATA_SET_ELEM_COMMENT` (libnftnl udata.h): the element's `comment "..."`.
pub const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;

// nft's datatype ids (nftables src/datatype.h, enum datatypes). A concatenation's id is
// built by nft's concat_type_alloc(): for each field in order, id = id << TYPE_BITS | field.
/// `TYPE_BITS`.
pub const TYPE_BITS: u32 = 6;
/// `TYPE_IPADDR` (`ipv4_addr`).
pub const TYPE_IPADDR: u32 = 7;
/// `TYPE_IP6ADDR` (`ipv6_addr`).
pub const TYPE_IP6ADDR: u32 = 8;
/// `TYPE_INET_SERVICE` (`inet_service`).
pub const TYPE_INET_SERVICE: u32 = 13;

/// The key type id of `addr . addr . inet_service` for `family`, as `nft` stores it in
/// `NFTA_SET_KEY_TYPE` (33293 for IPv6, 29133 for IPv4). tests/netlink_nft.rs proves it:
/// `check` compares exactly and passes on sets that `nft` 1.0.6 created with `type` and
/// with `typeof`.
pub const fn key_type(family: Family) -> u32 {
    let addr = match family {
        Family::V6 => TYPE_IP6ADDR,
        Family::V4 => TYPE_IPADDR,
    };
    (((addr << TYPE_BITS) | addr) << TYPE_BITS) | TYPE_INET_SERVICE
}

/// The key length: each field of a concatenation padded to 4 bytes (nf_tables
/// `NFT_REG32_SIZE` registers), so 16+16+4 for IPv6 and 4+4+4 for IPv4.
pub const fn key_len(family: Family) -> usize {
    match family {
        Family::V6 => 36,
        Family::V4 => 12,
    }
}

/// nft family numbers (`NFPROTO_*`, linux/netfilter.h) and their `nft` names.
const FAMILIES: [(&str, u8); 6] = [
    ("ip", 2),
    ("ip6", 10),
    ("inet", 1),
    ("arp", 3),
    ("bridge", 7),
    ("netdev", 5),
];

/// `NFT_NAME_MAXLEN` - 1: the longest table or set name the kernel takes.
const NAME_MAX: usize = 255;

/// Where our sets live and what they are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftConfig {
    /// The table's family as `nft` names it (`inet`).
    pub(crate) family: &'static str,
    /// Its `NFPROTO_*` number.
    pub(crate) family_id: u8,
    /// The table's name.
    pub(crate) table: String,
    prefix: String,
}

impl NftConfig {
    /// Parses `--nft-table "FAMILY NAME"` (e.g. `inet filter`) and `--anchor` (the set
    /// prefix, e.g. `ftp6proxy`).
    ///
    /// # Errors
    /// [`super::ErrorKind::Setup`] for an unknown family or a bad name.
    pub fn new(table_spec: &str, prefix: &str) -> Result<NftConfig, Error> {
        let mut words = table_spec.split_whitespace();
        let (Some(family), Some(table), None) = (words.next(), words.next(), words.next()) else {
            return Err(Error::configure(format!(
                "--nft-table wants \"FAMILY NAME\" (e.g. \"inet filter\"), got {:?}",
                table_spec
            )));
        };
        let Some(&(family, family_id)) = FAMILIES.iter().find(|(name, _)| *name == family) else {
            return Err(Error::configure(format!(
                "unknown nftables family {family:?} (one of ip, ip6, inet, arp, bridge, netdev)"
            )));
        };
        check_name("table", table)?;
        check_name("set prefix", prefix)?;
        if prefix.len() + 1 > NAME_MAX {
            return Err(Error::configure(format!(
                "set prefix {prefix:?} is too long"
            )));
        }
        Ok(NftConfig {
            family,
            family_id,
            table: table.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The set for holes of `family`: `<prefix>6` or `<prefix>4`.
    pub fn set_name(&self, family: Family) -> String {
        match family {
            Family::V6 => format!("{}6", self.prefix),
            Family::V4 => format!("{}4", self.prefix),
        }
    }

    /// The `nft` command that creates the set for `family`, exactly as the admin types it.
    pub fn add_set_command(&self, family: Family) -> String {
        let addr = match family {
            Family::V6 => "ipv6_addr",
            Family::V4 => "ipv4_addr",
        };
        format!(
            "nft add set {} {} {} '{{ type {addr} . {addr} . inet_service; flags timeout; }}'",
            self.family,
            self.table,
            self.set_name(family)
        )
    }

    /// `FAMILY NAME` as `nft` prints it.
    pub fn table_spec(&self) -> String {
        format!("{} {}", self.family, self.table)
    }
}

/// Only what `nft` itself accepts unquoted: a letter, then letters, digits, `_`, `-`, `.`.
fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let ok = name.len() <= NAME_MAX
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::configure(format!(
            "bad nftables {what} name {name:?} (letters, digits, _ - . only)"
        )))
    }
}

/// The set key for `spec`: `src . dst . dport`, each field padded to 4 bytes (port in
/// network byte order followed by two zero bytes, as `nft -d netlink` prints `0000cbc3`
/// for port 50123).
pub fn element_key(spec: &HoleSpec) -> Vec<u8> {
    let mut key = Vec::with_capacity(36);
    for addr in [spec.src, spec.dst] {
        match addr {
            IpAddr::V4(a) => key.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => key.extend_from_slice(&a.octets()),
        }
    }
    key.extend_from_slice(&spec.dport.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    key
}

/// The element comment: libnftnl udata TLV {u8 type, u8 len, value with NUL}.
pub fn element_userdata(slot: Slot) -> Vec<u8> {
    let text = format!("ftp6proxy slot {slot}");
    let len = u8::try_from(text.len() + 1).expect("a slot comment is shorter than 255 bytes");
    let mut data = vec![NFTNL_UDATA_SET_ELEM_COMMENT, len];
    data.extend_from_slice(text.as_bytes());
    data.push(0);
    data
}

/// The timeout in milliseconds, at least 1 (0 would mean "the set's default timeout").
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Appends one `NFT_MSG_NEWSETELEM` (with `timeout`) or `NFT_MSG_DELSETELEM` (without) for
/// one element, with `NLM_F_ACK`.
#[allow(clippy::too_many_arguments)]
fn push_elem_msg(
    b: &mut MsgBuilder,
    msg: u8,
    seq: u32,
    cfg: &NftConfig,
    set: &str,
    key: &[u8],
    timeout_ms: Option<u64>,
    userdata: Option<&[u8]>,
) {
    let flags = if msg == NFT_MSG_NEWSETELEM {
        // No NLM_F_EXCL: an existing element is not an error (it is deleted and re-added
        // in the same batch, see build_open).
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK
    } else {
        NLM_F_REQUEST | NLM_F_ACK
    };
    b.begin(
        nfnl_type(NFNL_SUBSYS_NFTABLES, msg),
        flags,
        seq,
        cfg.family_id,
        0,
    )
    .attr_str(NFTA_SET_ELEM_LIST_TABLE, &cfg.table)
    .attr_str(NFTA_SET_ELEM_LIST_SET, set)
    .nest_begin(NFTA_SET_ELEM_LIST_ELEMENTS)
    .nest_begin(NFTA_LIST_ELEM);
    if let Some(ms) = timeout_ms {
        b.attr_be_u64(NFTA_SET_ELEM_TIMEOUT, ms);
    }
    b.nest_begin(NFTA_SET_ELEM_KEY)
        .attr(NFTA_DATA_VALUE, key)
        .nest_end();
    if let Some(data) = userdata {
        b.attr(NFTA_SET_ELEM_USERDATA, data);
    }
    b.nest_end().nest_end().end();
}

/// Batch begin/end: `res_id` names the subsystem (big-endian on the wire).
fn push_batch_marker(b: &mut MsgBuilder, ty: u16, seq: u32) {
    b.begin(ty, NLM_F_REQUEST, seq, 0, u16::from(NFNL_SUBSYS_NFTABLES))
        .end();
}

/// A built batch: its bytes, the sequence number of its BEGIN marker, and the sequence
/// numbers that must each be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The datagram.
    pub bytes: Vec<u8>,
    /// Seq of `NFNL_MSG_BATCH_BEGIN` (answered only if the whole batch is refused).
    pub begin_seq: u32,
    /// Seqs of the messages that carry `NLM_F_ACK`.
    pub acks: Vec<u32>,
}

/// Installs the hole, or restarts its timeout if it is already there, in one transaction:
/// add (a no-op if present), delete, add with the new timeout. The first add makes the
/// delete valid whether or not the element existed; the final add sets the timeout from
/// now on every kernel. (Recent kernels, e.g. the 6.18 the tests run on, also update the
/// timeout of an existing element on a plain add; older ones silently keep the old one,
/// so we do not rely on it.) Same as:
/// ```text
/// nft -f - <<EOF
/// add element inet filter ftp6proxy6 { SRC . DST . PORT timeout 2s comment "ftp6proxy slot N" }
/// delete element inet filter ftp6proxy6 { SRC . DST . PORT }
/// add element inet filter ftp6proxy6 { SRC . DST . PORT timeout 2s comment "ftp6proxy slot N" }
/// EOF
/// ```
pub fn build_open(cfg: &NftConfig, seq: u32, slot: Slot, spec: &HoleSpec, ttl: Duration) -> Batch {
    let set = cfg.set_name(spec.family());
    let key = element_key(spec);
    let ud = element_userdata(slot);
    let ms = Some(ttl_ms(ttl));
    let mut b = MsgBuilder::new();
    push_batch_marker(&mut b, NFNL_MSG_BATCH_BEGIN, seq);
    push_elem_msg(
        &mut b,
        NFT_MSG_NEWSETELEM,
        seq + 1,
        cfg,
        &set,
        &key,
        ms,
        Some(&ud),
    );
    push_elem_msg(
        &mut b,
        NFT_MSG_DELSETELEM,
        seq + 2,
        cfg,
        &set,
        &key,
        None,
        None,
    );
    push_elem_msg(
        &mut b,
        NFT_MSG_NEWSETELEM,
        seq + 3,
        cfg,
        &set,
        &key,
        ms,
        Some(&ud),
    );
    push_batch_marker(&mut b, NFNL_MSG_BATCH_END, seq + 4);
    Batch {
        bytes: b.finish(),
        begin_seq: seq,
        acks: vec![seq + 1, seq + 2, seq + 3],
    }
}

/// Removes the hole: `nft delete element inet filter ftp6proxy6 { SRC . DST . PORT }`.
pub fn build_close(cfg: &NftConfig, seq: u32, spec: &HoleSpec) -> Batch {
    let set = cfg.set_name(spec.family());
    let key = element_key(spec);
    let mut b = MsgBuilder::new();
    push_batch_marker(&mut b, NFNL_MSG_BATCH_BEGIN, seq);
    push_elem_msg(
        &mut b,
        NFT_MSG_DELSETELEM,
        seq + 1,
        cfg,
        &set,
        &key,
        None,
        None,
    );
    push_batch_marker(&mut b, NFNL_MSG_BATCH_END, seq + 2);
    Batch {
        bytes: b.finish(),
        begin_seq: seq,
        acks: vec![seq + 1],
    }
}

/// Empties both sets in one transaction: `nft flush set inet filter ftp6proxy6` and
/// `... ftp6proxy4` (DELSETELEM without an element list flushes the set).
pub fn build_flush(cfg: &NftConfig, seq: u32) -> Batch {
    let mut b = MsgBuilder::new();
    push_batch_marker(&mut b, NFNL_MSG_BATCH_BEGIN, seq);
    for (i, family) in [Family::V6, Family::V4].into_iter().enumerate() {
        let i = u32::try_from(i).expect("two sets");
        b.begin(
            nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_DELSETELEM),
            NLM_F_REQUEST | NLM_F_ACK,
            seq + 1 + i,
            cfg.family_id,
            0,
        )
        .attr_str(NFTA_SET_ELEM_LIST_TABLE, &cfg.table)
        .attr_str(NFTA_SET_ELEM_LIST_SET, &cfg.set_name(family))
        .end();
    }
    push_batch_marker(&mut b, NFNL_MSG_BATCH_END, seq + 3);
    Batch {
        bytes: b.finish(),
        begin_seq: seq,
        acks: vec![seq + 1, seq + 2],
    }
}

/// `NFT_MSG_GETTABLE` for our table (not a dump).
pub fn build_get_table(cfg: &NftConfig, seq: u32) -> Vec<u8> {
    let mut b = MsgBuilder::new();
    b.begin(
        nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        cfg.family_id,
        0,
    )
    .attr_str(NFTA_TABLE_NAME, &cfg.table)
    .end();
    b.finish()
}

/// `NFT_MSG_GETSET` for one set (not a dump), as `nft list set` sends it.
pub fn build_get_set(cfg: &NftConfig, seq: u32, set: &str) -> Vec<u8> {
    let mut b = MsgBuilder::new();
    b.begin(
        nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETSET),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        cfg.family_id,
        0,
    )
    .attr_str(NFTA_SET_TABLE, &cfg.table)
    .attr_str(NFTA_SET_NAME, set)
    .end();
    b.finish()
}

/// `NFT_MSG_GETSETELEM` dump of one set's elements.
pub fn build_dump_elems(cfg: &NftConfig, seq: u32, set: &str) -> Vec<u8> {
    let mut b = MsgBuilder::new();
    b.begin(
        nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETSETELEM),
        NLM_F_REQUEST | NLM_F_DUMP | NLM_F_ACK,
        seq,
        cfg.family_id,
        0,
    )
    .attr_str(NFTA_SET_ELEM_LIST_TABLE, &cfg.table)
    .attr_str(NFTA_SET_ELEM_LIST_SET, set)
    .end();
    b.finish()
}

/// What `check` needs to know about a set, from an `NFT_MSG_NEWSET` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetInfo {
    /// `NFTA_SET_FLAGS`.
    pub flags: u32,
    /// `NFTA_SET_KEY_TYPE`.
    pub key_type: u32,
    /// `NFTA_SET_KEY_LEN`.
    pub key_len: u32,
}

/// Reads the fields of an `NFT_MSG_NEWSET` body (nfgenmsg + attributes).
///
/// # Errors
/// When the body is truncated or malformed.
pub fn parse_set_msg(payload: &[u8]) -> Result<SetInfo, netlink::ParseError> {
    let (_, body) = split_nfgenmsg(payload)?;
    let mut info = SetInfo::default();
    for attr in attrs(body) {
        let attr = attr?;
        match attr.ty {
            NFTA_SET_FLAGS => info.flags = attr.be_u32().unwrap_or(0),
            NFTA_SET_KEY_TYPE => info.key_type = attr.be_u32().unwrap_or(0),
            NFTA_SET_KEY_LEN => info.key_len = attr.be_u32().unwrap_or(0),
            _ => {}
        }
    }
    Ok(info)
}

/// Counts the elements in an `NFT_MSG_NEWSETELEM` dump message body.
///
/// # Errors
/// When the body is truncated or malformed.
pub fn count_elems_msg(payload: &[u8]) -> Result<usize, netlink::ParseError> {
    let (_, body) = split_nfgenmsg(payload)?;
    let mut count = 0;
    for attr in attrs(body) {
        let attr = attr?;
        if attr.ty == NFTA_SET_ELEM_LIST_ELEMENTS {
            for elem in attrs(attr.data) {
                if elem?.ty == NFTA_LIST_ELEM {
                    count += 1;
                }
            }
        }
    }
    Ok(count)
}

/// One element of a set dump: its key bytes and the time it has left, if it has a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedElem {
    /// The key (`NFTA_DATA_VALUE` inside `NFTA_SET_ELEM_KEY`).
    pub key: Vec<u8>,
    /// Milliseconds before it expires (`NFTA_SET_ELEM_EXPIRATION`); `None`: no timeout.
    pub expires_ms: Option<u64>,
}

/// The elements in one NEWSETELEM dump message.
///
/// # Errors
/// When the message is malformed.
pub fn elems_msg(payload: &[u8]) -> Result<Vec<ListedElem>, netlink::ParseError> {
    let mut out = Vec::new();
    for_each_elem(payload, |elem| {
        let mut listed = ListedElem {
            key: Vec::new(),
            expires_ms: None,
        };
        for field in attrs(elem) {
            let field = field?;
            match field.ty {
                NFTA_SET_ELEM_KEY => {
                    for value in attrs(field.data) {
                        let value = value?;
                        if value.ty == NFTA_DATA_VALUE {
                            listed.key = value.data.to_vec();
                        }
                    }
                }
                NFTA_SET_ELEM_EXPIRATION => listed.expires_ms = field.be_u64(),
                _ => {}
            }
        }
        out.push(listed);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `each` with the attributes of every element (`NFTA_LIST_ELEM`) of the element list
/// (`NFTA_SET_ELEM_LIST_ELEMENTS`) of one `NFT_MSG_NEWSETELEM` message; attributes of other
/// types are skipped at both levels.
///
/// # Errors
/// When the message is malformed, or `each` says so.
pub fn for_each_elem(
    payload: &[u8],
    mut each: impl FnMut(&[u8]) -> Result<(), netlink::ParseError>,
) -> Result<(), netlink::ParseError> {
    let (_, body) = split_nfgenmsg(payload)?;
    for attr in attrs(body) {
        let attr = attr?;
        if attr.ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for elem in attrs(attr.data) {
            let elem = elem?;
            if elem.ty == NFTA_LIST_ELEM {
                each(elem.data)?;
            }
        }
    }
    Ok(())
}

/// Deletes the elements with `keys` from `set` in one transaction.
pub fn build_delete_keys(cfg: &NftConfig, seq: u32, set: &str, keys: &[Vec<u8>]) -> Batch {
    let mut b = MsgBuilder::new();
    push_batch_marker(&mut b, NFNL_MSG_BATCH_BEGIN, seq);
    let mut acks = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let msg_seq = seq + 1 + u32::try_from(i).unwrap_or(u32::MAX - seq - 2);
        push_elem_msg(
            &mut b,
            NFT_MSG_DELSETELEM,
            msg_seq,
            cfg,
            set,
            key,
            None,
            None,
        );
        acks.push(msg_seq);
    }
    let end = seq + 1 + u32::try_from(keys.len()).unwrap_or(0);
    push_batch_marker(&mut b, NFNL_MSG_BATCH_END, end);
    Batch {
        bytes: b.finish(),
        begin_seq: seq,
        acks,
    }
}

/// What is wrong with one of our sets, if anything.
pub(crate) fn set_problem(info: &SetInfo, family: Family) -> Option<String> {
    let mut problems = Vec::new();
    if info.key_type != key_type(family) || info.key_len != key_len_u32(family) {
        problems.push(format!(
            "key type {} length {} (want {} length {})",
            info.key_type,
            info.key_len,
            key_type(family),
            key_len(family)
        ));
    }
    if info.flags & NFT_SET_TIMEOUT == 0 {
        problems.push("no 'flags timeout'".to_owned());
    }
    let foreign = info.flags & (NFT_SET_INTERVAL | NFT_SET_MAP | NFT_SET_OBJECT | NFT_SET_CONSTANT);
    if foreign != 0 {
        problems.push(format!(
            "flags 0x{foreign:x} (interval/map/object/constant) we cannot use"
        ));
    }
    (!problems.is_empty()).then(|| problems.join(", "))
}

fn key_len_u32(family: Family) -> u32 {
    u32::try_from(key_len(family)).expect("key lengths are small")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::messages;
    use ftp6proxy_core::Mode;

    fn cfg() -> NftConfig {
        NftConfig::new("inet filter", "ftp6proxy").unwrap()
    }

    fn spec4() -> HoleSpec {
        HoleSpec {
            mode: Mode::Passive,
            src: "192.0.2.10".parse().unwrap(),
            dst: "192.0.2.22".parse().unwrap(),
            dport: 50123,
        }
    }

    fn spec6() -> HoleSpec {
        HoleSpec {
            mode: Mode::Active,
            src: "2001:db8::10".parse().unwrap(),
            dst: "2001:db8::21".parse().unwrap(),
            dport: 50123,
        }
    }

    /// `nft --debug=mnl add element inet filter ftp6proxy4 { 192.0.2.10 . 192.0.2.22 . 50123
    /// timeout 5s comment "ftp6proxy slot 64003" }` (nft 1.0.6, Linux 6.18), without the
    /// `NFTA_SET_ELEM_LIST_SET_ID` attribute nft adds for sets created in the same batch,
    /// and with our flags (CREATE|ACK) and seq. Attribute order as nft sends it.
    #[cfg(target_endian = "little")]
    const NEWSETELEM_V4: &[u8] = &[
        116, 0, 0, 0, 0x0c, 0x0a, 0x05, 0x04, 2, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr
        1, 0, 0, 0, // nfgenmsg: NFPROTO_INET, v0, res_id 0
        11, 0, 1, 0, b'f', b'i', b'l', b't', b'e', b'r', 0, 0, // LIST_TABLE "filter"
        15, 0, 2, 0, b'f', b't', b'p', b'6', b'p', b'r', b'o', b'x', b'y', b'4', 0, 0, // SET
        68, 0, 3, 0x80, // LIST_ELEMENTS (nested)
        64, 0, 1, 0x80, // LIST_ELEM (nested)
        12, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0x13, 0x88, // TIMEOUT 5000 ms
        20, 0, 1, 0x80, // KEY (nested)
        16, 0, 1, 0, 0xc0, 0, 2, 0x0a, 0xc0, 0, 2, 0x16, 0xc3, 0xcb, 0, 0, // DATA_VALUE
        27, 0, 6, 0, 0, 0x15, b'f', b't', b'p', b'6', b'p', b'r', b'o', b'x', b'y', b' ', b's',
        b'l', b'o', b't', b' ', b'6', b'4', b'0', b'0', b'3', 0, 0, // USERDATA comment
    ];

    #[cfg(target_endian = "little")]
    #[test]
    fn open_batch_matches_nft_element_encoding() {
        let batch = build_open(&cfg(), 1, Slot(64003), &spec4(), Duration::from_secs(5));
        let msgs: Vec<_> = messages(&batch.bytes).map(Result::unwrap).collect();
        assert_eq!(msgs.len(), 5);
        // The first NEWSETELEM, byte for byte.
        let start = 20;
        assert_eq!(
            &batch.bytes[start..start + NEWSETELEM_V4.len()],
            NEWSETELEM_V4
        );
        assert_eq!(batch.acks, vec![2, 3, 4]);
        assert_eq!(batch.begin_seq, 1);
    }

    /// Batch markers as `nft --debug=mnl` shows them: type 16/17, res_id 10 big-endian
    /// (`00 00 00 0a`).
    #[cfg(target_endian = "little")]
    #[test]
    fn batch_markers_name_the_nftables_subsystem() {
        let batch = build_close(&cfg(), 7, &spec6());
        let msgs: Vec<_> = messages(&batch.bytes).map(Result::unwrap).collect();
        assert_eq!(msgs.len(), 3);
        assert_eq!(
            (msgs[0].ty, msgs[0].seq, msgs[0].payload),
            (16, 7, &[0, 0, 0, 10][..])
        );
        assert_eq!(
            (msgs[2].ty, msgs[2].seq, msgs[2].payload),
            (17, 9, &[0, 0, 0, 10][..])
        );
        assert_eq!(msgs[1].ty, 0x0a0e);
        assert_eq!(msgs[1].flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(batch.acks, vec![8]);
    }

    #[test]
    fn open_batch_is_add_delete_add() {
        let batch = build_open(&cfg(), 10, Slot(1), &spec6(), Duration::from_millis(1500));
        let types: Vec<u16> = messages(&batch.bytes)
            .map(|m| m.unwrap().ty & 0xff)
            .collect();
        assert_eq!(types, vec![16, 12, 14, 12, 17]);
    }

    #[test]
    fn delete_carries_key_but_no_timeout_or_comment() {
        let batch = build_close(&cfg(), 1, &spec6());
        let msg = messages(&batch.bytes).nth(1).unwrap().unwrap();
        let (_, body) = split_nfgenmsg(msg.payload).unwrap();
        let list = attrs(body)
            .map(Result::unwrap)
            .find(|a| a.ty == NFTA_SET_ELEM_LIST_ELEMENTS)
            .unwrap();
        let elem = attrs(list.data).next().unwrap().unwrap();
        let inner: Vec<u16> = attrs(elem.data).map(|a| a.unwrap().ty).collect();
        assert_eq!(inner, vec![NFTA_SET_ELEM_KEY]);
    }

    /// `nft -d netlink` prints the v6 key as
    /// `b80d0120 00000000 00000000 10000000 b80d0120 00000000 00000000 21000000 0000cbc3`
    /// (32-bit words in host order): 16 + 16 + 4 bytes, port padded.
    #[test]
    fn v6_key_is_36_bytes_with_padded_port() {
        let key = element_key(&spec6());
        assert_eq!(key.len(), key_len(Family::V6));
        assert_eq!(&key[..4], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(key[15], 0x10);
        assert_eq!(key[31], 0x21);
        assert_eq!(&key[32..], &[0xc3, 0xcb, 0, 0]);
    }

    #[test]
    fn v4_key_is_12_bytes() {
        assert_eq!(
            element_key(&spec4()),
            vec![192, 0, 2, 10, 192, 0, 2, 22, 0xc3, 0xcb, 0, 0]
        );
    }

    /// The ids nft computes (concat_type_alloc); tests/netlink_nft.rs shows the kernel holds
    /// exactly these for sets `nft` created.
    #[test]
    fn concatenated_key_type_ids() {
        assert_eq!(key_type(Family::V6), 33293);
        assert_eq!(key_type(Family::V4), 29133);
    }

    #[test]
    fn flush_sends_delsetelem_without_elements_for_both_sets() {
        let batch = build_flush(&cfg(), 1);
        let msgs: Vec<_> = messages(&batch.bytes).map(Result::unwrap).collect();
        assert_eq!(msgs.len(), 4);
        let names: Vec<Vec<u8>> = msgs[1..3]
            .iter()
            .map(|m| {
                let (_, body) = split_nfgenmsg(m.payload).unwrap();
                let attrs: Vec<_> = attrs(body).map(Result::unwrap).collect();
                assert!(attrs.iter().all(|a| a.ty != NFTA_SET_ELEM_LIST_ELEMENTS));
                attrs[1].c_str().to_vec()
            })
            .collect();
        assert_eq!(names, vec![b"ftp6proxy6".to_vec(), b"ftp6proxy4".to_vec()]);
    }

    #[test]
    fn table_spec_is_family_and_name() {
        let c = NftConfig::new("ip6  fw", "holes").unwrap();
        assert_eq!(c.family_id, 10);
        assert_eq!(c.table_spec(), "ip6 fw");
        assert_eq!(c.set_name(Family::V4), "holes4");
        assert!(NftConfig::new("filter", "x").is_err());
        assert!(NftConfig::new("inet filter extra", "x").is_err());
        assert!(NftConfig::new("ipx filter", "x").is_err());
        assert!(NftConfig::new("inet fil;ter", "x").is_err());
        assert!(NftConfig::new("inet filter", "").is_err());
        assert!(NftConfig::new("inet filter", "a b").is_err());
    }

    #[test]
    fn advice_is_the_exact_nft_command() {
        assert_eq!(
            cfg().add_set_command(Family::V6),
            "nft add set inet filter ftp6proxy6 '{ type ipv6_addr . ipv6_addr . inet_service; flags timeout; }'"
        );
        assert_eq!(
            cfg().add_set_command(Family::V4),
            "nft add set inet filter ftp6proxy4 '{ type ipv4_addr . ipv4_addr . inet_service; flags timeout; }'"
        );
    }

    #[test]
    fn set_problems_are_named() {
        let good = SetInfo {
            flags: NFT_SET_TIMEOUT,
            key_type: 33293,
            key_len: 36,
        };
        assert_eq!(set_problem(&good, Family::V6), None);
        assert!(set_problem(&good, Family::V4).unwrap().contains("key type"));
        let no_timeout = SetInfo { flags: 0, ..good };
        assert!(set_problem(&no_timeout, Family::V6)
            .unwrap()
            .contains("flags timeout"));
        let interval = SetInfo {
            flags: NFT_SET_TIMEOUT | NFT_SET_INTERVAL,
            ..good
        };
        assert!(set_problem(&interval, Family::V6).is_some());
    }

    #[test]
    fn set_message_parser_survives_truncation() {
        let mut b = MsgBuilder::new();
        b.begin(0x0a09, 0, 1, 1, 0)
            .attr_str(NFTA_SET_TABLE, "filter")
            .attr_be_u32(NFTA_SET_FLAGS, NFT_SET_TIMEOUT)
            .attr_be_u32(NFTA_SET_KEY_TYPE, 33293)
            .attr_be_u32(NFTA_SET_KEY_LEN, 36)
            .end();
        let bytes = b.finish();
        let payload = &bytes[16..];
        assert_eq!(
            parse_set_msg(payload),
            Ok(SetInfo {
                flags: NFT_SET_TIMEOUT,
                key_type: 33293,
                key_len: 36
            })
        );
        for end in 0..payload.len() {
            let _ = parse_set_msg(&payload[..end]);
            let _ = count_elems_msg(&payload[..end]);
        }
    }

    #[test]
    fn comment_is_a_nul_terminated_udata_tlv() {
        let ud = element_userdata(Slot(64003));
        assert_eq!(&ud[..2], &[0, 21]);
        assert_eq!(&ud[2..], b"ftp6proxy slot 64003\0");
    }

    #[test]
    fn zero_ttl_becomes_one_millisecond() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_secs(2)), 2000);
    }
}
