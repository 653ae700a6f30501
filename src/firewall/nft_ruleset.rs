//! `--check` on Linux: does the kernel's ruleset actually use ftp6proxy? Reads the chains,
//! rules and anonymous sets that nf_tables lists over netlink and answers three questions:
//! does some rule feed NFQUEUE `-p` with the FTP control packets of both directions (nft
//! `queue` expressions, or the xtables `NFQUEUE` target that iptables-nft stores as a
//! `target` expression) — in copy mode, NFLOG group `-p` (nft `log group N`, or the
//! xtables `NFLOG` target) — and does some rule accept new connections found in our hole
//! sets?
//!
//! Owns the parsing of `NFT_MSG_NEWCHAIN`/`NEWRULE`/`NEWSETELEM` dump messages into
//! [`Chain`]/[`Rule`] and the analysis ([`analyse`]); the socket round trips are
//! [`super::nft::Nft::check_ruleset`]'s. Must not change anything: it only reads, and it
//! decides nothing about packets. It proves presence, not equivalence: a rule counts when
//! its port, protocol, family and `ct state` conditions (the ones this module understands)
//! admit the packets in question; other conditions (interfaces, addresses, marks) are not
//! evaluated and are reported as such. Conditions it cannot read (inverted matches, named
//! sets of ports, ranges) make a queue rule count for nothing rather than for everything.
//! Rules made with iptables-legacy live in the kernel's x_tables, not in nf_tables, and are
//! invisible here; the report says so when it finds no queue rule.
//!
//! Layouts: uapi `linux/netfilter/nf_tables.h` (attributes, registers, verdicts),
//! `linux/netfilter/xt_NFQUEUE.h`, `xt_NFLOG.h`, `xt_multiport.h`, `xt_tcpudp.h` (xtables
//! payloads, in host byte order, inside `NFTA_TARGET_INFO`/`NFTA_MATCH_INFO`). nft's `log`
//! puts its group as a big-endian u16 (`nft_log_dump` in net/netfilter/nft_log.c:
//! `nla_put_be16(skb, NFTA_LOG_GROUP, ...)`) and only when the rule names a group; a `log`
//! without one writes to the kernel log and feeds no group.

use std::collections::{BTreeMap, BTreeSet};

use super::FeedKind;
use crate::netlink::{
    self, attrs, nfnl_type, split_nfgenmsg, Attr, MsgBuilder, NFNL_SUBSYS_NFTABLES, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};

// enum nf_tables_msg_types
/// `NFT_MSG_NEWCHAIN`: one chain of a GETCHAIN dump.
pub const NFT_MSG_NEWCHAIN: u8 = 3;
/// `NFT_MSG_GETCHAIN`.
pub const NFT_MSG_GETCHAIN: u8 = 4;
/// `NFT_MSG_NEWRULE`: one rule of a GETRULE dump.
pub const NFT_MSG_NEWRULE: u8 = 6;
/// `NFT_MSG_GETRULE`.
pub const NFT_MSG_GETRULE: u8 = 7;
pub use super::nft_msg::{NFT_MSG_GETSETELEM, NFT_MSG_NEWSETELEM};

// linux/netfilter.h
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

// Attribute numbers (nf_tables.h).
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
/// `NFT_REG_VERDICT`.
const NFT_REG_VERDICT: u32 = 0;

// Verdict codes (linux/netfilter.h, nf_tables.h enum nft_verdicts).
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;

// ct state bits: NF_CT_STATE_BIT(ctinfo) = 1 << (ctinfo + 1) (nf_conntrack_common.h).
const CT_ESTABLISHED: u32 = 1 << 1;
const CT_NEW: u32 = 1 << 3;

const IPPROTO_TCP: u8 = 6;

/// Hook numbers (`NF_INET_*`) as `nft` names them.
fn hook_name(hook: u32) -> &'static str {
    match hook {
        0 => "prerouting",
        1 => "input",
        2 => "forward",
        3 => "output",
        4 => "postrouting",
        _ => "other hook",
    }
}

/// A GETCHAIN, GETRULE (all families, all tables) or GETSETELEM dump request.
pub fn build_dump(msg: u8, seq: u32) -> Vec<u8> {
    let mut b = MsgBuilder::new();
    b.begin(
        nfnl_type(NFNL_SUBSYS_NFTABLES, msg),
        NLM_F_REQUEST | NLM_F_DUMP | NLM_F_ACK,
        seq,
        0,
        0,
    )
    .end();
    b.finish()
}

/// The elements of one (anonymous) set: a GETSETELEM dump.
pub fn build_dump_set(family: u8, table: &str, set: &str, seq: u32) -> Vec<u8> {
    let mut b = MsgBuilder::new();
    b.begin(
        nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETSETELEM),
        NLM_F_REQUEST | NLM_F_DUMP | NLM_F_ACK,
        seq,
        family,
        0,
    )
    .attr_str(NFTA_SET_ELEM_LIST_TABLE, table)
    .attr_str(NFTA_SET_ELEM_LIST_SET, set)
    .end();
    b.finish()
}

/// Where a chain or rule lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChainId {
    /// `NFPROTO_*` of the table.
    pub family: u8,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
}

impl std::fmt::Display for ChainId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let family = match self.family {
            NFPROTO_INET => "inet",
            NFPROTO_IPV4 => "ip",
            NFPROTO_IPV6 => "ip6",
            3 => "arp",
            5 => "netdev",
            7 => "bridge",
            _ => "?",
        };
        write!(f, "{family} {} {}", self.table, self.chain)
    }
}

/// One chain: a base chain has a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Family, table, name.
    pub id: ChainId,
    /// `NFTA_HOOK_HOOKNUM` of a base chain.
    pub hook: Option<u32>,
}

/// One expression of a rule, reduced to what the analysis reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `payload`: load `len` bytes at `offset` of header `base` into `dreg`.
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    /// `meta`: load `key` into `dreg`.
    Meta { dreg: u32, key: u32 },
    /// `ct`: load `key` into `dreg`.
    Ct { dreg: u32, key: u32 },
    /// `bitwise`: `dreg = sreg & mask ^ xor` (only the mask is kept).
    Bitwise { sreg: u32, dreg: u32, mask: Vec<u8> },
    /// `cmp`: compare `sreg` with `data`.
    Cmp { sreg: u32, op: u32, data: Vec<u8> },
    /// `lookup`: is `sreg` in `set`?
    Lookup {
        set: String,
        sreg: u32,
        inverted: bool,
    },
    /// `queue`: to queues `num..num+total-1`; `from_register` when the number comes
    /// from a register (a map), which this analysis cannot follow.
    Queue {
        num: u16,
        total: u16,
        from_register: bool,
    },
    /// `log`: to nfnetlink_log group `group` (`None`: to the kernel log, no group).
    Log { group: Option<u16> },
    /// `target` (xtables through nft_compat): name, revision, info struct.
    Target {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// `match` (xtables through nft_compat).
    Match {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// `immediate` into the verdict register: code and, for jump/goto, the chain.
    Verdict { code: i32, chain: Option<String> },
    /// Anything else (`counter`, `log`, ...), by name.
    Other(String),
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Family, table, chain.
    pub id: ChainId,
    /// Its expressions in order.
    pub exprs: Vec<Expr>,
}

fn be_u16(attr: &Attr<'_>) -> u16 {
    attr.data
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

fn be_u32(attr: &Attr<'_>) -> u32 {
    attr.be_u32().unwrap_or(0)
}

fn string(attr: &Attr<'_>) -> String {
    String::from_utf8_lossy(attr.c_str()).into_owned()
}

/// `NFTA_DATA_VALUE` inside an `nft_data` attribute.
fn data_value(attr: &Attr<'_>) -> Result<Vec<u8>, netlink::ParseError> {
    for a in attrs(attr.data) {
        let a = a?;
        if a.ty == NFTA_DATA_VALUE {
            return Ok(a.data.to_vec());
        }
    }
    Ok(Vec::new())
}

/// Reads an `NFT_MSG_NEWCHAIN` body.
///
/// # Errors
/// When the message is malformed.
pub fn parse_chain(payload: &[u8]) -> Result<Chain, netlink::ParseError> {
    let (gen, body) = split_nfgenmsg(payload)?;
    let mut chain = Chain {
        id: ChainId {
            family: gen.family,
            table: String::new(),
            chain: String::new(),
        },
        hook: None,
    };
    for attr in attrs(body) {
        let attr = attr?;
        match attr.ty {
            NFTA_CHAIN_TABLE => chain.id.table = string(&attr),
            NFTA_CHAIN_NAME => chain.id.chain = string(&attr),
            NFTA_CHAIN_HOOK => {
                for h in attrs(attr.data) {
                    let h = h?;
                    if h.ty == NFTA_HOOK_HOOKNUM {
                        chain.hook = Some(be_u32(&h));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(chain)
}

/// Reads an `NFT_MSG_NEWRULE` body.
///
/// # Errors
/// When the message is malformed.
pub fn parse_rule(payload: &[u8]) -> Result<Rule, netlink::ParseError> {
    let (gen, body) = split_nfgenmsg(payload)?;
    let mut rule = Rule {
        id: ChainId {
            family: gen.family,
            table: String::new(),
            chain: String::new(),
        },
        exprs: Vec::new(),
    };
    for attr in attrs(body) {
        let attr = attr?;
        match attr.ty {
            NFTA_RULE_TABLE => rule.id.table = string(&attr),
            NFTA_RULE_CHAIN => rule.id.chain = string(&attr),
            NFTA_RULE_EXPRESSIONS => {
                for elem in attrs(attr.data) {
                    let elem = elem?;
                    if elem.ty == NFTA_LIST_ELEM {
                        rule.exprs.push(parse_expr(elem.data)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(rule)
}

fn parse_expr(buf: &[u8]) -> Result<Expr, netlink::ParseError> {
    let mut name = String::new();
    let mut data: &[u8] = &[];
    for attr in attrs(buf) {
        let attr = attr?;
        match attr.ty {
            NFTA_EXPR_NAME => name = string(&attr),
            NFTA_EXPR_DATA => data = attr.data,
            _ => {}
        }
    }
    // Attribute numbers per expression: enum nft_<name>_attributes in nf_tables.h.
    let mut f: BTreeMap<u16, Attr<'_>> = BTreeMap::new();
    for attr in attrs(data) {
        let attr = attr?;
        f.insert(attr.ty, attr);
    }
    let u = |ty: u16| f.get(&ty).map_or(0, be_u32);
    Ok(match name.as_str() {
        "payload" => Expr::Payload {
            dreg: u(1),
            base: u(2),
            offset: u(3),
            len: u(4),
        },
        "meta" if f.contains_key(&1) => Expr::Meta {
            dreg: u(1),
            key: u(2),
        },
        "ct" if f.contains_key(&1) => Expr::Ct {
            dreg: u(1),
            key: u(2),
        },
        "bitwise" => Expr::Bitwise {
            sreg: u(1),
            dreg: u(2),
            mask: f.get(&4).map(data_value).transpose()?.unwrap_or_default(),
        },
        "cmp" => Expr::Cmp {
            sreg: u(1),
            op: u(2),
            data: f.get(&3).map(data_value).transpose()?.unwrap_or_default(),
        },
        "lookup" => Expr::Lookup {
            set: f.get(&1).map(string).unwrap_or_default(),
            sreg: u(2),
            inverted: u(5) & NFT_LOOKUP_F_INV != 0,
        },
        "queue" => Expr::Queue {
            num: f.get(&1).map_or(0, be_u16),
            total: f.get(&2).map_or(1, be_u16),
            from_register: f.contains_key(&4),
        },
        // NFTA_LOG_GROUP: be16 (nft_log_dump); a 4-byte value is read as be32.
        "log" => Expr::Log {
            group: f.get(&1).map(|a| match a.data.len() {
                4 => u16::try_from(be_u32(a)).unwrap_or(u16::MAX),
                _ => be_u16(a),
            }),
        },
        "target" | "match" => {
            let xt_name = f.get(&1).map(string).unwrap_or_default();
            let rev = u(2);
            let info = f.get(&3).map(|a| a.data.to_vec()).unwrap_or_default();
            if name == "target" {
                Expr::Target {
                    name: xt_name,
                    rev,
                    info,
                }
            } else {
                Expr::Match {
                    name: xt_name,
                    rev,
                    info,
                }
            }
        }
        "immediate" if u(1) == NFT_REG_VERDICT => {
            let mut code = 0;
            let mut chain = None;
            if let Some(d) = f.get(&2) {
                for a in attrs(d.data) {
                    let a = a?;
                    if a.ty != NFTA_DATA_VERDICT {
                        continue;
                    }
                    for v in attrs(a.data) {
                        let v = v?;
                        match v.ty {
                            NFTA_VERDICT_CODE => code = be_u32(&v).cast_signed(),
                            NFTA_VERDICT_CHAIN => chain = Some(string(&v)),
                            _ => {}
                        }
                    }
                }
            }
            Expr::Verdict { code, chain }
        }
        _ => Expr::Other(name),
    })
}

/// The ports of an anonymous set from one `NFT_MSG_NEWSETELEM` message: (key, is the end
/// of an interval).
///
/// # Errors
/// When the message is malformed.
pub fn parse_set_elems(payload: &[u8]) -> Result<Vec<(u16, bool)>, netlink::ParseError> {
    let mut out = Vec::new();
    super::nft_msg::for_each_elem(payload, |elem| {
        let mut key = None;
        let mut end = false;
        for a in attrs(elem) {
            let a = a?;
            match a.ty {
                NFTA_SET_ELEM_KEY => {
                    key = data_value(&a)?
                        .get(..2)
                        .map(|b| u16::from_be_bytes([b[0], b[1]]));
                }
                NFTA_SET_ELEM_FLAGS => end = be_u32(&a) & NFT_SET_ELEM_INTERVAL_END != 0,
                _ => {}
            }
        }
        if let Some(key) = key {
            out.push((key, end));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Port ranges from a set's elements: single ports, or, when interval ends are flagged,
/// `[start, end)` intervals as nft encodes them.
pub fn port_ranges(elems: &[(u16, bool)]) -> Vec<(u16, u16)> {
    if !elems.iter().any(|&(_, end)| end) {
        return elems.iter().map(|&(p, _)| (p, p)).collect();
    }
    let mut sorted = elems.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let mut open = None;
    for (value, end) in sorted {
        match (end, open) {
            (false, _) => open = Some(value),
            (true, Some(start)) => {
                if value > start {
                    out.push((start, value - 1));
                }
                open = None;
            }
            (true, None) => {}
        }
    }
    if let Some(start) = open {
        out.push((start, u16::MAX));
    }
    out
}

/// Which anonymous sets a rule set looks ports up in: (family, table, set name).
pub fn anonymous_sets(rules: &[Rule]) -> BTreeSet<(u8, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for e in &rule.exprs {
            if let Expr::Lookup { set, .. } = e {
                if set.starts_with("__set") {
                    out.insert((rule.id.family, rule.id.table.clone(), set.clone()));
                }
            }
        }
    }
    out
}

/// The port ranges of each anonymous set, keyed like [`anonymous_sets`].
pub type AnonSets = BTreeMap<(u8, String, String), Vec<(u16, u16)>>;

/// Which header field a port condition tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Src,
    Dst,
    /// xt multiport `--ports`: source or destination.
    Either,
}

/// What a rule's conditions (the ones read here) say.
#[derive(Debug, Clone, Default)]
struct Facts {
    v4: bool,
    v6: bool,
    /// Port conditions: all must hold.
    ports: Vec<(Field, Vec<(u16, u16)>)>,
    /// A condition that may exclude our packets and cannot be read (why).
    unreadable: Option<String>,
    /// A protocol condition other than TCP.
    not_tcp: bool,
    /// The states a `ct state` condition admits (all, without one).
    ct_states: u32,
    /// Conditions not evaluated (interfaces, addresses, ...).
    others: usize,
    action: Action,
    /// NFLOG groups the rule copies to (nft `log group`, xt `NFLOG`: neither ends the
    /// rule's evaluation, so they are kept apart from the verdict).
    log_groups: Vec<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Action {
    /// Queues `first..=last`.
    Queue(u32, u32),
    /// A queue number from a register.
    QueueUnknown,
    Accept,
    Jump(String),
    #[default]
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Loaded {
    Sport,
    Dport,
    L4proto,
    Nfproto,
    CtState,
    CtStateMasked(u32),
    Other,
}

/// Registers: the 128-bit `NFT_REG_1..4` are the 32-bit `NFT_REG32_00 + 4 * (n - 1)`.
fn reg(r: u32) -> u32 {
    if (1..=4).contains(&r) {
        8 + (r - 1) * 4
    } else {
        r
    }
}

fn ne_u16(info: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes([*info.get(at)?, *info.get(at + 1)?]))
}

fn facts(rule: &Rule, anon: &AnonSets) -> Facts {
    let mut f = Facts {
        v4: matches!(rule.id.family, NFPROTO_IPV4 | NFPROTO_INET),
        v6: matches!(rule.id.family, NFPROTO_IPV6 | NFPROTO_INET),
        ct_states: u32::MAX,
        ..Facts::default()
    };
    let mut regs: BTreeMap<u32, Loaded> = BTreeMap::new();
    let unreadable = |f: &mut Facts, why: String| {
        f.unreadable.get_or_insert(why);
    };
    for e in &rule.exprs {
        match e {
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => {
                let what = match (*base, *offset, *len) {
                    (NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2) => Loaded::Sport,
                    (NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2) => Loaded::Dport,
                    _ => Loaded::Other,
                };
                regs.insert(reg(*dreg), what);
            }
            Expr::Meta { dreg, key } => {
                let what = match *key {
                    NFT_META_L4PROTO => Loaded::L4proto,
                    NFT_META_NFPROTO => Loaded::Nfproto,
                    _ => Loaded::Other,
                };
                regs.insert(reg(*dreg), what);
            }
            Expr::Ct { dreg, key } => {
                let what = if *key == NFT_CT_STATE {
                    Loaded::CtState
                } else {
                    Loaded::Other
                };
                regs.insert(reg(*dreg), what);
            }
            Expr::Bitwise { sreg, dreg, mask } => {
                let what = match (regs.get(&reg(*sreg)), mask.get(..4)) {
                    (Some(Loaded::CtState), Some(m)) => {
                        Loaded::CtStateMasked(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]))
                    }
                    _ => Loaded::Other,
                };
                regs.insert(reg(*dreg), what);
            }
            Expr::Cmp { sreg, op, data } => match (regs.get(&reg(*sreg)), *op) {
                (Some(Loaded::Sport | Loaded::Dport), NFT_CMP_EQ) if data.len() == 2 => {
                    let port = u16::from_be_bytes([data[0], data[1]]);
                    let field = if regs.get(&reg(*sreg)) == Some(&Loaded::Sport) {
                        Field::Src
                    } else {
                        Field::Dst
                    };
                    f.ports.push((field, vec![(port, port)]));
                }
                (Some(Loaded::Sport | Loaded::Dport), _) => {
                    unreadable(&mut f, "a port comparison other than ==".to_owned());
                }
                (Some(Loaded::L4proto), NFT_CMP_EQ) => {
                    f.not_tcp |= data.first() != Some(&IPPROTO_TCP);
                }
                (Some(Loaded::Nfproto), NFT_CMP_EQ) => match data.first() {
                    Some(&NFPROTO_IPV4) => f.v6 = false,
                    Some(&NFPROTO_IPV6) => f.v4 = false,
                    _ => {
                        f.v4 = false;
                        f.v6 = false;
                    }
                },
                (Some(Loaded::CtStateMasked(mask)), NFT_CMP_NEQ)
                    if data.iter().all(|&b| b == 0) =>
                {
                    f.ct_states &= *mask;
                }
                _ => f.others += 1,
            },
            Expr::Lookup {
                set,
                sreg,
                inverted,
            } => match regs.get(&reg(*sreg)) {
                Some(l @ (Loaded::Sport | Loaded::Dport)) => {
                    let field = if *l == Loaded::Sport {
                        Field::Src
                    } else {
                        Field::Dst
                    };
                    let key = (rule.id.family, rule.id.table.clone(), set.clone());
                    match anon.get(&key) {
                        Some(ranges) if !inverted => f.ports.push((field, ranges.clone())),
                        _ => unreadable(
                            &mut f,
                            format!(
                                "ports looked up {}in set {set}",
                                if *inverted { "(inverted) " } else { "" }
                            ),
                        ),
                    }
                }
                _ => f.others += 1,
            },
            Expr::Match { name, rev, info } => match name.as_str() {
                // struct xt_multiport(_v1) { u8 flags; u8 count; u16 ports[15];
                // (v1:) u8 pflags[15]; u8 invert; }
                "multiport" => {
                    let flags = info.first().copied().unwrap_or(0);
                    let count = usize::from(info.get(1).copied().unwrap_or(0)).min(15);
                    let field = match flags {
                        0 => Field::Src,
                        1 => Field::Dst,
                        _ => Field::Either,
                    };
                    let ports: Vec<u16> =
                        (0..count).filter_map(|i| ne_u16(info, 2 + 2 * i)).collect();
                    let pflags = |i: usize| {
                        if *rev >= 1 {
                            info.get(32 + i).copied().unwrap_or(0)
                        } else {
                            0
                        }
                    };
                    if *rev >= 1 && info.get(47).copied().unwrap_or(0) != 0 {
                        unreadable(&mut f, "an inverted multiport match".to_owned());
                    } else {
                        let mut ranges = Vec::new();
                        let mut i = 0;
                        while i < ports.len() {
                            if pflags(i) != 0 && i + 1 < ports.len() {
                                ranges.push((ports[i], ports[i + 1]));
                                i += 2;
                            } else {
                                ranges.push((ports[i], ports[i]));
                                i += 1;
                            }
                        }
                        f.ports.push((field, ranges));
                    }
                }
                // struct xt_tcp { u16 spts[2]; u16 dpts[2]; u8 option, flg_mask, flg_cmp,
                // invflags; }
                "tcp" => {
                    let inv = info.get(11).copied().unwrap_or(0);
                    if inv & 0x3 != 0 {
                        unreadable(&mut f, "an inverted tcp port match".to_owned());
                    }
                    for (field, at) in [(Field::Src, 0), (Field::Dst, 4)] {
                        if let (Some(lo), Some(hi)) = (ne_u16(info, at), ne_u16(info, at + 2)) {
                            if (lo, hi) != (0, u16::MAX) {
                                f.ports.push((field, vec![(lo, hi)]));
                            }
                        }
                    }
                }
                "comment" => {}
                _ => f.others += 1,
            },
            Expr::Queue {
                num,
                total,
                from_register,
            } => {
                f.action = if *from_register {
                    Action::QueueUnknown
                } else {
                    let first = u32::from(*num);
                    Action::Queue(first, first + u32::from((*total).max(1)) - 1)
                };
            }
            Expr::Log { group } => f.log_groups.extend(*group),
            // struct xt_nflog_info { u32 len; u16 group; u16 threshold; ... }: the target
            // returns XT_CONTINUE, the rule goes on.
            Expr::Target { name, info, .. } if name == "NFLOG" => {
                if let Some(group) = ne_u16(info, 4) {
                    f.log_groups.push(group);
                }
            }
            Expr::Target { name, rev, info } => {
                f.action = match name.as_str() {
                    // struct xt_NFQ_info(_v1.._v3) { u16 queuenum; (v1+:) u16 queues_total; ... }
                    "NFQUEUE" => match ne_u16(info, 0) {
                        Some(num) => {
                            let total = if *rev >= 1 {
                                ne_u16(info, 2).unwrap_or(1).max(1)
                            } else {
                                1
                            };
                            let first = u32::from(num);
                            Action::Queue(first, first + u32::from(total) - 1)
                        }
                        None => Action::QueueUnknown,
                    },
                    "ACCEPT" => Action::Accept,
                    _ => Action::Other,
                };
            }
            Expr::Verdict { code, chain } => {
                f.action = match (*code, chain) {
                    (NF_ACCEPT, _) => Action::Accept,
                    (NFT_JUMP | NFT_GOTO, Some(c)) => Action::Jump(c.clone()),
                    _ => Action::Other,
                };
            }
            Expr::Other(_) => {}
        }
    }
    f
}

/// Direction of an FTP control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client to server: destination port is the FTP port.
    ToServer,
    /// Server to client: source port is the FTP port.
    FromServer,
}

impl Facts {
    /// Does every port condition admit a control packet of `dir` on FTP port `port`
    /// (the other end's port being any ephemeral port)?
    fn admits(&self, dir: Dir, port: u16) -> bool {
        let has = |ranges: &[(u16, u16)]| ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi);
        self.ports.iter().all(|(field, ranges)| match (field, dir) {
            (Field::Dst, Dir::ToServer) | (Field::Src, Dir::FromServer) | (Field::Either, _) => {
                has(ranges)
            }
            // A condition on the ephemeral end's port excludes most connections.
            (Field::Src, Dir::ToServer) | (Field::Dst, Dir::FromServer) => false,
        })
    }
}

/// What ftp6proxy needs of the ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// NFQUEUE number, or in copy mode NFLOG group (`-p`).
    pub queue: u16,
    /// Whether the packets (NFQUEUE) or copies (NFLOG) must reach it.
    pub kind: FeedKind,
    /// FTP control ports (`--ftp-ports`).
    pub ftp_ports: Vec<u16>,
    /// The family and name of the table holding the sets (`--nft-table`).
    pub table_family: u8,
    /// The table name.
    pub table: String,
    /// The IPv6 and IPv4 hole sets.
    pub set6: String,
    /// The IPv4 hole set.
    pub set4: String,
}

/// The verdict of [`analyse`]: what was found, and what is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One line per piece found.
    pub found: Vec<String>,
    /// One line per missing piece; empty when the ruleset is complete.
    pub missing: Vec<String>,
    /// Warnings that do not fail the check.
    pub notes: Vec<String>,
}

/// The chains reachable from a base chain, with the hooks they are reached from.
fn reachable(
    chains: &[Chain],
    rules: &[Rule],
    anon: &AnonSets,
) -> BTreeMap<ChainId, BTreeSet<u32>> {
    let mut reach: BTreeMap<ChainId, BTreeSet<u32>> = BTreeMap::new();
    let mut work: Vec<(ChainId, u32)> = chains
        .iter()
        .filter_map(|c| c.hook.map(|h| (c.id.clone(), h)))
        .collect();
    while let Some((id, hook)) = work.pop() {
        if !reach.entry(id.clone()).or_default().insert(hook) {
            continue;
        }
        for rule in rules.iter().filter(|r| r.id == id) {
            if let Action::Jump(target) = facts(rule, anon).action {
                let to = ChainId {
                    chain: target,
                    ..id.clone()
                };
                work.push((to, hook));
            }
        }
    }
    reach
}

fn hooks_text(hooks: &BTreeSet<u32>) -> String {
    hooks
        .iter()
        .map(|&h| hook_name(h))
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks the ruleset against `needs`.
pub fn analyse(needs: &Needs, chains: &[Chain], rules: &[Rule], anon: &AnonSets) -> Report {
    let mut report = Report::default();
    let reach = reachable(chains, rules, anon);
    let q = u32::from(needs.queue);
    let (target, label, what_rule) = match needs.kind {
        FeedKind::Packets => (format!("NFQUEUE {q}"), format!("queue {q}"), "queue rule"),
        FeedKind::Copies => (
            format!("NFLOG group {q}"),
            format!("nflog group {q}"),
            "log rule",
        ),
    };

    // (b) Something feeds the queue (or the NFLOG group), per family, direction and port.
    let mut fed: BTreeSet<(bool, u8, u16)> = BTreeSet::new(); // (v6?, dir, port)
    let mut skipped = Vec::new();
    for rule in rules {
        let f = facts(rule, anon);
        let feeds = match (needs.kind, &f.action) {
            (FeedKind::Copies, _) => f.log_groups.contains(&needs.queue),
            (FeedKind::Packets, Action::Queue(lo, hi)) => *lo <= q && q <= *hi,
            (FeedKind::Packets, Action::QueueUnknown) => {
                skipped.push(format!(
                    "{}: a queue number from a map is not followed",
                    rule.id
                ));
                false
            }
            (FeedKind::Packets, _) => false,
        };
        if !feeds {
            continue;
        }
        let Some(hooks) = reach.get(&rule.id) else {
            skipped.push(format!(
                "{}: {what_rule} in a chain no hook reaches",
                rule.id
            ));
            continue;
        };
        if f.not_tcp || (!f.v4 && !f.v6) {
            continue;
        }
        if let Some(why) = &f.unreadable {
            skipped.push(format!("{}: {what_rule} not counted: {why}", rule.id));
            continue;
        }
        if f.ct_states & CT_ESTABLISHED == 0 {
            skipped.push(format!(
                "{}: {what_rule} not counted: its ct state excludes established connections",
                rule.id
            ));
            continue;
        }
        let mut what = Vec::new();
        for &port in &needs.ftp_ports {
            for (dir, code, name) in [(Dir::ToServer, 0, "dport"), (Dir::FromServer, 1, "sport")] {
                if f.admits(dir, port) {
                    for (v6, yes) in [(true, f.v6), (false, f.v4)] {
                        if yes {
                            fed.insert((v6, code, port));
                        }
                    }
                    what.push(format!("{name} {port}"));
                }
            }
        }
        if !what.is_empty() {
            let fam = match (f.v6, f.v4) {
                (true, true) => "IPv6+IPv4",
                (true, false) => "IPv6",
                _ => "IPv4",
            };
            report.found.push(format!(
                "{label}: {} (hook {}) feeds it {fam} tcp {}{}",
                rule.id,
                hooks_text(hooks),
                what.join(", "),
                if f.others > 0 {
                    format!(" ({} other conditions not evaluated)", f.others)
                } else {
                    String::new()
                }
            ));
        }
    }
    let mut gaps_by_family = Vec::new();
    for (v6, fam) in [(true, "IPv6"), (false, "IPv4")] {
        let mut gaps = Vec::new();
        for &port in &needs.ftp_ports {
            for (code, name) in [
                (0, "client to server (tcp dport"),
                (1, "server to client (tcp sport"),
            ] {
                if !fed.contains(&(v6, code, port)) {
                    gaps.push(format!("{name} {port})"));
                }
            }
        }
        let total = needs.ftp_ports.len() * 2;
        gaps_by_family.push((fam, gaps.len() == total, gaps));
    }
    let nothing_at_all = gaps_by_family.iter().all(|(_, none, _)| *none);
    if nothing_at_all {
        let (read, flag) = match needs.kind {
            FeedKind::Packets => ("nft queue statements and iptables-nft NFQUEUE targets", ""),
            FeedKind::Copies => (
                "nft log group statements and iptables-nft NFLOG targets",
                " --intercept nflog",
            ),
        };
        report.missing.push(format!(
            "no rule feeds {target} with FTP control packets (ports {}): read over nf_tables \
             netlink were {read}; rules made with iptables-legacy are invisible here and not \
             counted. Add them with ftp6proxy-queue{flag} -p {q} --ftp-ports {} start (see \
             nftables.conf.sample)",
            ports_text(&needs.ftp_ports),
            ports_text(&needs.ftp_ports),
        ));
    } else {
        for (fam, none, gaps) in &gaps_by_family {
            if *none {
                report.notes.push(format!(
                    "nothing feeds {target} with {fam} FTP control packets: {fam} FTP will not be helped"
                ));
            } else if !gaps.is_empty() {
                report.missing.push(format!(
                    "no rule feeds {target} with {fam} FTP control packets {}",
                    gaps.join(", ")
                ));
            }
        }
    }
    report.notes.extend(skipped);

    // (c) A rule accepts new connections found in each hole set.
    for set in [&needs.set6, &needs.set4] {
        let mut ok = None;
        for rule in rules
            .iter()
            .filter(|r| r.id.family == needs.table_family && r.id.table == needs.table)
        {
            let looks_up = rule
                .exprs
                .iter()
                .any(|e| matches!(e, Expr::Lookup { set: s, inverted: false, .. } if s == set));
            if !looks_up {
                continue;
            }
            let f = facts(rule, anon);
            let Some(hooks) = reach.get(&rule.id) else {
                continue;
            };
            if f.action == Action::Accept && f.ct_states & CT_NEW != 0 && !f.not_tcp {
                ok = Some(format!(
                    "holes: {} (hook {}) accepts new connections in @{set}",
                    rule.id,
                    hooks_text(hooks)
                ));
                break;
            }
        }
        match ok {
            Some(line) => report.found.push(line),
            None => report.missing.push(format!(
                "no rule accepts new connections found in set @{set}: holes would open and change \
                 nothing. Add to the filter chain of the table, e.g. \
                 nft add rule {} <chain> {} ct state new accept",
                table_text(needs),
                if set == &needs.set6 {
                    format!("ip6 saddr . ip6 daddr . tcp dport @{set}")
                } else {
                    format!("ip saddr . ip daddr . tcp dport @{set}")
                }
            )),
        }
    }
    report
}

fn ports_text(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn table_text(needs: &Needs) -> String {
    let id = ChainId {
        family: needs.table_family,
        table: needs.table.clone(),
        chain: String::new(),
    };
    id.to_string().trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    //! Rules as the kernel lists them, built byte by byte: this machine's kernel has no
    //! nft_queue, so the `queue` expression is tested here (iptables-nft's `target` and
    //! `match` expressions are tested against the kernel by tests/packaging/check-ruleset).
    use super::*;
    use crate::netlink::NLMSG_HDRLEN;

    /// One expression: name and (attribute, value) pairs; a value of `Nest` holds a
    /// `NFTA_DATA_VALUE` (cmp data) or a verdict.
    enum V {
        U32(u32),
        U16(u16),
        Str(&'static str),
        Data(Vec<u8>),
        /// Bytes as they are (an xtables info struct).
        Raw(Vec<u8>),
        Verdict(i32),
    }

    fn rule(family: u8, table: &str, chain: &str, exprs: &[(&str, Vec<(u16, V)>)]) -> Rule {
        let mut b = MsgBuilder::new();
        b.begin(
            nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWRULE),
            0,
            1,
            family,
            0,
        )
        .attr_str(NFTA_RULE_TABLE, table)
        .attr_str(NFTA_RULE_CHAIN, chain)
        .nest_begin(NFTA_RULE_EXPRESSIONS);
        for (name, fields) in exprs {
            b.nest_begin(NFTA_LIST_ELEM)
                .attr_str(NFTA_EXPR_NAME, name)
                .nest_begin(NFTA_EXPR_DATA);
            for (ty, v) in fields {
                match v {
                    V::U32(x) => {
                        b.attr_be_u32(*ty, *x);
                    }
                    V::U16(x) => {
                        b.attr(*ty, &x.to_be_bytes());
                    }
                    V::Str(s) => {
                        b.attr_str(*ty, s);
                    }
                    V::Data(d) => {
                        b.nest_begin(*ty).attr(NFTA_DATA_VALUE, d).nest_end();
                    }
                    V::Raw(d) => {
                        b.attr(*ty, d);
                    }
                    V::Verdict(code) => {
                        b.nest_begin(*ty)
                            .nest_begin(NFTA_DATA_VERDICT)
                            .attr_be_u32(NFTA_VERDICT_CODE, code.cast_unsigned())
                            .nest_end()
                            .nest_end();
                    }
                }
            }
            b.nest_end().nest_end();
        }
        b.nest_end().end();
        let bytes = b.finish();
        parse_rule(&bytes[NLMSG_HDRLEN..]).expect("a well-formed rule")
    }

    fn tcp_port(field_offset: u32, port: u16) -> Vec<(&'static str, Vec<(u16, V)>)> {
        vec![
            ("meta", vec![(1, V::U32(1)), (2, V::U32(NFT_META_L4PROTO))]),
            (
                "cmp",
                vec![
                    (1, V::U32(1)),
                    (2, V::U32(NFT_CMP_EQ)),
                    (3, V::Data(vec![6])),
                ],
            ),
            (
                "payload",
                vec![
                    (1, V::U32(1)),
                    (2, V::U32(2)),
                    (3, V::U32(field_offset)),
                    (4, V::U32(2)),
                ],
            ),
            (
                "cmp",
                vec![
                    (1, V::U32(1)),
                    (2, V::U32(NFT_CMP_EQ)),
                    (3, V::Data(port.to_be_bytes().to_vec())),
                ],
            ),
        ]
    }

    /// `tcp dport 21 queue num NUM bypass` (offset 2) or `tcp sport 21 ...` (offset 0).
    fn queue_rule(offset: u32, num: u16, total: u16) -> Rule {
        let mut e = tcp_port(offset, 21);
        e.push((
            "queue",
            vec![(1, V::U16(num)), (2, V::U16(total)), (3, V::U16(1))],
        ));
        rule(NFPROTO_INET, "q", "forward", &e)
    }

    /// `... @SET ct state new accept` in inet ftp6proxy forward.
    fn hole_rule(set: &'static str) -> Rule {
        rule(
            NFPROTO_INET,
            "ftp6proxy",
            "forward",
            &[
                ("lookup", vec![(1, V::Str(set)), (2, V::U32(9))]),
                ("ct", vec![(1, V::U32(1)), (2, V::U32(NFT_CT_STATE))]),
                (
                    "bitwise",
                    vec![
                        (1, V::U32(1)),
                        (2, V::U32(1)),
                        (3, V::U32(4)),
                        (4, V::Data(CT_NEW.to_ne_bytes().to_vec())),
                        (5, V::Data(vec![0; 4])),
                    ],
                ),
                (
                    "cmp",
                    vec![
                        (1, V::U32(1)),
                        (2, V::U32(NFT_CMP_NEQ)),
                        (3, V::Data(vec![0; 4])),
                    ],
                ),
                (
                    "immediate",
                    vec![(1, V::U32(0)), (2, V::Verdict(NF_ACCEPT))],
                ),
            ],
        )
    }

    fn chains() -> Vec<Chain> {
        ["q", "ftp6proxy"]
            .into_iter()
            .map(|t| Chain {
                id: ChainId {
                    family: NFPROTO_INET,
                    table: t.to_owned(),
                    chain: "forward".to_owned(),
                },
                hook: Some(2),
            })
            .collect()
    }

    /// `tcp dport 21 log group GROUP` (offset 2) or `tcp sport 21 ...` (offset 0); `None`:
    /// a `log` without a group (to the kernel log).
    fn log_rule(offset: u32, group: Option<u16>) -> Rule {
        let mut e = tcp_port(offset, 21);
        e.push(("log", group.map(|g| (1, V::U16(g))).into_iter().collect()));
        rule(NFPROTO_INET, "q", "forward", &e)
    }

    /// iptables-nft `-p tcp --dport 21 -j NFLOG --nflog-group GROUP` (offset 2) or
    /// `--sport 21` (offset 0): struct xt_nflog_info { u32 len; u16 group; u16 threshold;
    /// u16 flags; u16 pad; char prefix[64]; } in host byte order.
    fn xt_nflog_rule(offset: u32, group: u16) -> Rule {
        let mut info = vec![0u8; 76];
        info[4..6].copy_from_slice(&group.to_ne_bytes());
        let mut e = tcp_port(offset, 21);
        e.push((
            "target",
            vec![(1, V::Str("NFLOG")), (2, V::U32(0)), (3, V::Raw(info))],
        ));
        rule(NFPROTO_IPV6, "mangle", "FORWARD", &e)
    }

    fn copy_needs() -> Needs {
        Needs {
            kind: FeedKind::Copies,
            ..needs()
        }
    }

    /// Copy mode: nft `log group N` for both directions feeds NFLOG group N; the same
    /// rules count for nothing in inline mode, and queue rules nothing in copy mode.
    #[test]
    fn nft_log_group_rules_feed_copy_mode_only() {
        let holes = [hole_rule("ftp6proxy6"), hole_rule("ftp6proxy4")];
        let mut rules = vec![log_rule(2, Some(10004)), log_rule(0, Some(10004))];
        rules.extend(holes.clone());
        let report = analyse(&copy_needs(), &chains(), &rules, &AnonSets::new());
        assert!(report.missing.is_empty(), "{report:#?}");
        assert!(
            report.found[0].starts_with(
                "nflog group 10004: inet q forward (hook forward) feeds it IPv6+IPv4 tcp dport 21"
            ),
            "{report:#?}"
        );
        let inline = analyse(&needs(), &chains(), &rules, &AnonSets::new());
        assert!(
            inline.missing[0].contains("no rule feeds NFQUEUE 10004"),
            "{inline:#?}"
        );
        let mut queued = vec![queue_rule(2, 10004, 1), queue_rule(0, 10004, 1)];
        queued.extend(holes);
        let report = analyse(&copy_needs(), &chains(), &queued, &AnonSets::new());
        assert!(
            report.missing[0].contains("no rule feeds NFLOG group 10004")
                && report.missing[0].contains("ftp6proxy-queue --intercept nflog -p 10004"),
            "{report:#?}"
        );
    }

    /// Another group, a log without a group, or one direction only: each named.
    #[test]
    fn a_log_rule_to_another_group_or_one_direction_is_not_enough() {
        let holes = [hole_rule("ftp6proxy6"), hole_rule("ftp6proxy4")];
        for logs in [
            vec![log_rule(2, Some(10005)), log_rule(0, Some(10005))],
            vec![log_rule(2, None), log_rule(0, None)],
        ] {
            let mut rules = logs;
            rules.extend(holes.clone());
            let report = analyse(&copy_needs(), &chains(), &rules, &AnonSets::new());
            assert!(
                report.missing[0].contains("no rule feeds NFLOG group 10004 with FTP"),
                "{report:#?}"
            );
        }
        let mut rules = vec![log_rule(2, Some(10004))];
        rules.extend(holes);
        let report = analyse(&copy_needs(), &chains(), &rules, &AnonSets::new());
        assert_eq!(report.missing.len(), 2, "{report:#?}");
        assert!(report
            .missing
            .iter()
            .all(|m| m.contains("server to client (tcp sport 21)")));
    }

    /// iptables-nft's NFLOG target (a compat `target` expression that lets the rule go
    /// on) feeds the group named in its info struct, for its table's family only.
    #[test]
    fn xt_nflog_target_feeds_its_group() {
        let mut all_chains = chains();
        all_chains.push(Chain {
            id: ChainId {
                family: NFPROTO_IPV6,
                table: "mangle".to_owned(),
                chain: "FORWARD".to_owned(),
            },
            hook: Some(2),
        });
        let rules = vec![
            xt_nflog_rule(2, 10004),
            xt_nflog_rule(0, 10004),
            hole_rule("ftp6proxy6"),
            hole_rule("ftp6proxy4"),
        ];
        let report = analyse(&copy_needs(), &all_chains, &rules, &AnonSets::new());
        assert!(report.missing.is_empty(), "{report:#?}");
        assert!(
            report.found[0]
                .contains("ip6 mangle FORWARD (hook forward) feeds it IPv6 tcp dport 21"),
            "{report:#?}"
        );
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("nothing feeds NFLOG group 10004 with IPv4")),
            "{report:#?}"
        );
    }

    fn needs() -> Needs {
        Needs {
            kind: FeedKind::Packets,
            queue: 10004,
            ftp_ports: vec![21],
            table_family: NFPROTO_INET,
            table: "ftp6proxy".to_owned(),
            set6: "ftp6proxy6".to_owned(),
            set4: "ftp6proxy4".to_owned(),
        }
    }

    #[test]
    fn nft_queue_rules_for_both_directions_pass() {
        let rules = vec![
            queue_rule(2, 10004, 1),
            queue_rule(0, 10004, 1),
            hole_rule("ftp6proxy6"),
            hole_rule("ftp6proxy4"),
        ];
        let report = analyse(&needs(), &chains(), &rules, &AnonSets::new());
        assert!(report.missing.is_empty(), "{report:#?}");
        assert_eq!(report.found.len(), 4, "{report:#?}");
        assert!(report.found[0]
            .contains("inet q forward (hook forward) feeds it IPv6+IPv4 tcp dport 21"));
    }

    #[test]
    fn a_queue_range_counts_for_each_number_in_it() {
        let rules = vec![
            queue_rule(2, 10000, 8),
            queue_rule(0, 10000, 8),
            hole_rule("ftp6proxy6"),
            hole_rule("ftp6proxy4"),
        ];
        assert!(analyse(&needs(), &chains(), &rules, &AnonSets::new())
            .missing
            .is_empty());
        let rules = vec![queue_rule(2, 10000, 4), queue_rule(0, 10000, 4)];
        let report = analyse(&needs(), &chains(), &rules, &AnonSets::new());
        assert!(
            report.missing[0].contains("no rule feeds NFQUEUE 10004"),
            "{report:#?}"
        );
    }

    #[test]
    fn nft_queue_for_one_direction_names_the_other() {
        let rules = vec![
            queue_rule(2, 10004, 1),
            hole_rule("ftp6proxy6"),
            hole_rule("ftp6proxy4"),
        ];
        let report = analyse(&needs(), &chains(), &rules, &AnonSets::new());
        assert_eq!(report.missing.len(), 2, "{report:#?}");
        assert!(
            report.missing[0].contains("IPv6 FTP control packets server to client (tcp sport 21)")
        );
        assert!(
            report.missing[1].contains("IPv4 FTP control packets server to client (tcp sport 21)")
        );
    }

    #[test]
    fn no_hole_rule_is_named_with_the_rule_to_add() {
        let rules = vec![
            queue_rule(2, 10004, 1),
            queue_rule(0, 10004, 1),
            hole_rule("ftp6proxy6"),
        ];
        let report = analyse(&needs(), &chains(), &rules, &AnonSets::new());
        assert_eq!(report.missing.len(), 1, "{report:#?}");
        assert!(report.missing[0]
            .contains("ip saddr . ip daddr . tcp dport @ftp6proxy4 ct state new accept"));
    }

    #[test]
    fn a_queue_number_from_a_map_is_not_counted() {
        let mut e = tcp_port(2, 21);
        e.push(("queue", vec![(4, V::U32(1))]));
        let rules = vec![rule(NFPROTO_INET, "q", "forward", &e)];
        let report = analyse(&needs(), &chains(), &rules, &AnonSets::new());
        assert!(report.missing[0].contains("no rule feeds"));
        assert!(
            report.notes.iter().any(|n| n.contains("from a map")),
            "{report:#?}"
        );
    }

    #[test]
    fn interval_sets_become_port_ranges() {
        assert_eq!(
            port_ranges(&[(21, false), (2121, false)]),
            vec![(21, 21), (2121, 2121)]
        );
        // nft encodes { 21, 2000-2100 } as 0(end) 21 22(end) 2000 2101(end).
        let elems = [
            (2101, true),
            (2000, false),
            (22, true),
            (21, false),
            (0, true),
        ];
        assert_eq!(port_ranges(&elems), vec![(21, 21), (2000, 2100)]);
        assert_eq!(
            port_ranges(&[(0, true), (60000, false)]),
            vec![(60000, 65535)]
        );
    }

    #[test]
    fn truncated_rule_is_an_error_not_a_panic() {
        let mut b = MsgBuilder::new();
        b.begin(0, 0, 1, 1, 0).attr_str(NFTA_RULE_TABLE, "t").end();
        let bytes = b.finish();
        for cut in 0..bytes.len() - NLMSG_HDRLEN {
            let _ = parse_rule(&bytes[NLMSG_HDRLEN..NLMSG_HDRLEN + cut]);
        }
    }
}
