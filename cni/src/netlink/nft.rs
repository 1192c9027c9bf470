//! nf_tables over netlink: batches of table/chain/rule messages and the
//! handful of expressions skiff-bridge needs (meta, payload, bitwise, cmp,
//! ct, fib, immediate, nat, masq).

use super::socket::ACK;
use super::{attr_str, attrs, find_attr, Msg, NlError, Socket};
use super::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NFNL_BATCH_GENID: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
pub const NFPROTO_BRIDGE: u8 = 7;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
/// Userdata TLV type nft uses for rule comments.
const UDATA_RULE_COMMENT: u8 = 0;

pub const HOOK_PREROUTING: u32 = 0;
pub const HOOK_OUTPUT: u32 = 3;
pub const HOOK_POSTROUTING: u32 = 4;
pub const REG1: u32 = 1;
pub const REG2: u32 = 2;

pub const META_IIFNAME: u32 = 6;
pub const META_IIFTYPE: u32 = 8;
/// ARPHRD_LOOPBACK, the `iiftype` of lo.
pub const ARPHRD_LOOPBACK: u16 = 772;
pub const META_NFPROTO: u32 = 15;
pub const META_L4PROTO: u32 = 16;
pub const BASE_LL: u32 = 0;
pub const BASE_NETWORK: u32 = 1;
pub const BASE_TRANSPORT: u32 = 2;
pub const CMP_EQ: u32 = 0;
pub const CMP_NEQ: u32 = 1;
pub const CT_STATUS: u32 = 2;
pub const FIB_DADDR: u32 = 2;
pub const FIB_RESULT_ADDRTYPE: u32 = 3;
pub const NAT_DNAT: u32 = 1;
pub const NF_DROP: u32 = 0;
/// IFNAMSIZ: `meta iifname` loads the name zero-padded to this length.
pub const IFNAMSIZ: usize = 16;

/// One rule expression.
#[derive(Debug, Clone)]
pub enum Expr {
    Meta {
        key: u32,
        dreg: u32,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Bitwise {
        reg: u32,
        mask: Vec<u8>,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    Ct {
        key: u32,
        dreg: u32,
    },
    Fib {
        flags: u32,
        result: u32,
        dreg: u32,
    },
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Nat {
        kind: u32,
        family: u8,
        addr_reg: u32,
        proto_reg: Option<u32>,
    },
    Masq,
    /// A verdict (`drop`, ...) loaded into the verdict register.
    Verdict(u32),
}

impl Expr {
    fn encode(&self, m: Msg) -> Msg {
        let (name, m) = (self.name(), m.begin(NFTA_LIST_ELEM));
        let m = m.str(NFTA_EXPR_NAME, name).begin(NFTA_EXPR_DATA);
        let m = match self {
            Expr::Meta { key, dreg } => m.be32(2, *key).be32(1, *dreg),
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => m
                .be32(1, *dreg)
                .be32(2, *base)
                .be32(3, *offset)
                .be32(4, *len),
            Expr::Bitwise { reg, mask } => m
                .be32(1, *reg)
                .be32(2, *reg)
                .be32(3, mask.len() as u32)
                .begin(4)
                .attr(NFTA_DATA_VALUE, mask)
                .end()
                .begin(5)
                .attr(NFTA_DATA_VALUE, &vec![0u8; mask.len()])
                .end(),
            Expr::Cmp { op, data } => m
                .be32(1, REG1)
                .be32(2, *op)
                .begin(3)
                .attr(NFTA_DATA_VALUE, data)
                .end(),
            Expr::Ct { key, dreg } => m.be32(1, *dreg).be32(2, *key),
            Expr::Fib {
                flags,
                result,
                dreg,
            } => m.be32(1, *dreg).be32(2, *result).be32(3, *flags),
            Expr::Immediate { dreg, data } => {
                m.be32(1, *dreg).begin(2).attr(NFTA_DATA_VALUE, data).end()
            }
            Expr::Nat {
                kind,
                family,
                addr_reg,
                proto_reg,
            } => {
                let m = m
                    .be32(1, *kind)
                    .be32(2, u32::from(*family))
                    .be32(3, *addr_reg);
                match proto_reg {
                    Some(r) => m.be32(5, *r),
                    None => m,
                }
            }
            Expr::Masq => m,
            Expr::Verdict(code) => m.be32(1, 0).begin(2).begin(2).be32(1, *code).end().end(),
        };
        m.end().end()
    }

    fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Cmp { .. } => "cmp",
            Expr::Ct { .. } => "ct",
            Expr::Fib { .. } => "fib",
            Expr::Immediate { .. } => "immediate",
            Expr::Nat { .. } => "nat",
            Expr::Masq => "masq",
            Expr::Verdict(_) => "immediate",
        }
    }
}

/// A base chain.
pub struct ChainSpec {
    pub name: &'static str,
    pub hook: u32,
    pub priority: i32,
    /// "nat" or "filter".
    pub kind: &'static str,
}

/// A rule as read back from the kernel.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub chain: String,
    pub handle: u64,
    pub comment: String,
}

fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

fn msg_type(cmd: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | cmd
}

fn encode_comment(comment: &str) -> Vec<u8> {
    let mut v = vec![UDATA_RULE_COMMENT, (comment.len() + 1).min(255) as u8];
    v.extend_from_slice(&comment.as_bytes()[..comment.len().min(254)]);
    v.push(0);
    v
}

fn decode_comment(data: &[u8]) -> String {
    match data {
        [UDATA_RULE_COMMENT, len, rest @ ..] => attr_str(&rest[..(*len as usize).min(rest.len())]),
        _ => String::new(),
    }
}

pub struct Batch<'a> {
    family: u8,
    table: &'a str,
    genid: Option<u32>,
    msgs: Vec<Vec<u8>>,
    seqs: Vec<u32>,
    sock: &'a mut Socket,
}

impl<'a> Batch<'a> {
    pub fn new(sock: &'a mut Socket, table: &'a str) -> Batch<'a> {
        Batch::for_family(sock, NFPROTO_INET, table)
    }

    pub fn for_family(sock: &'a mut Socket, family: u8, table: &'a str) -> Batch<'a> {
        Batch {
            family,
            table,
            genid: None,
            msgs: Vec::new(),
            seqs: Vec::new(),
            sock,
        }
    }

    fn push(&mut self, build: impl FnOnce(u32) -> Vec<u8>) {
        let seq = self.sock.next_seq();
        self.seqs.push(seq);
        self.msgs.push(build(seq));
    }

    /// Makes the commit fail with ERESTART if the ruleset changed since
    /// generation `genid` (read before deciding what to delete).
    pub fn if_generation(&mut self, genid: u32) {
        self.genid = Some(genid);
    }

    pub fn table(&mut self) {
        self.table_flags(NLM_F_CREATE);
    }

    /// Creates the table, failing with EEXIST if it is already there.
    pub fn new_table(&mut self) {
        self.table_flags(NLM_F_CREATE | NLM_F_EXCL);
    }

    fn table_flags(&mut self, flags: u16) {
        let (t, f) = (self.table, self.family);
        self.push(|seq| {
            Msg::new(msg_type(NFT_MSG_NEWTABLE), ACK | flags)
                .raw(&nfgen(f, 0))
                .str(NFTA_TABLE_NAME, t)
                .finish(seq)
        });
    }

    /// Deletes the table with its chains and rules.
    pub fn delete_table(&mut self) {
        let (t, f) = (self.table, self.family);
        self.push(|seq| {
            Msg::new(msg_type(NFT_MSG_DELTABLE), ACK)
                .raw(&nfgen(f, 0))
                .str(NFTA_TABLE_NAME, t)
                .finish(seq)
        });
    }

    /// Creates a base chain. Only for a chain that does not exist yet: on an
    /// existing one the kernel records an update, frees it only after an RCU
    /// grace period, and makes whoever closes an nf_tables socket next wait
    /// for that.
    pub fn chain(&mut self, c: &ChainSpec) {
        let kind = c.kind;
        let (t, f) = (self.table, self.family);
        self.push(|seq| {
            Msg::new(msg_type(NFT_MSG_NEWCHAIN), ACK | NLM_F_CREATE)
                .raw(&nfgen(f, 0))
                .str(NFTA_CHAIN_TABLE, t)
                .str(NFTA_CHAIN_NAME, c.name)
                .begin(NFTA_CHAIN_HOOK)
                .be32(NFTA_HOOK_HOOKNUM, c.hook)
                .be32(NFTA_HOOK_PRIORITY, c.priority as u32)
                .end()
                .be32(NFTA_CHAIN_POLICY, 1)
                .str(NFTA_CHAIN_TYPE, kind)
                .finish(seq)
        });
    }

    pub fn rule(&mut self, chain: &str, exprs: &[Expr], comment: &str) {
        let (t, f) = (self.table, self.family);
        self.push(|seq| {
            let mut m = Msg::new(msg_type(NFT_MSG_NEWRULE), ACK | NLM_F_CREATE | NLM_F_APPEND)
                .raw(&nfgen(f, 0))
                .str(NFTA_RULE_TABLE, t)
                .str(NFTA_RULE_CHAIN, chain)
                .begin(NFTA_RULE_EXPRESSIONS);
            for e in exprs {
                m = e.encode(m);
            }
            m.end()
                .attr(NFTA_RULE_USERDATA, &encode_comment(comment))
                .finish(seq)
        });
    }

    pub fn delete_rule(&mut self, r: &RuleInfo) {
        let (t, f) = (self.table, self.family);
        self.push(|seq| {
            Msg::new(msg_type(NFT_MSG_DELRULE), ACK)
                .raw(&nfgen(f, 0))
                .str(NFTA_RULE_TABLE, t)
                .str(NFTA_RULE_CHAIN, &r.chain)
                .attr(NFTA_RULE_HANDLE, &r.handle.to_be_bytes())
                .finish(seq)
        });
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Sends the batch as one transaction: all of it applies or none does.
    pub fn commit(self) -> Result<(), NlError> {
        if self.msgs.is_empty() {
            return Ok(());
        }
        let begin_seq = self.sock.next_seq();
        let mut begin = Msg::new(NFNL_MSG_BATCH_BEGIN, 0).raw(&nfgen(0, NFNL_SUBSYS_NFTABLES));
        if let Some(g) = self.genid {
            begin = begin.be32(NFNL_BATCH_GENID, g);
        }
        let mut buf = begin.finish(begin_seq);
        for m in &self.msgs {
            buf.extend_from_slice(m);
        }
        let end_seq = self.sock.next_seq();
        buf.extend(
            Msg::new(NFNL_MSG_BATCH_END, 0)
                .raw(&nfgen(0, NFNL_SUBSYS_NFTABLES))
                .finish(end_seq),
        );
        self.sock.send(&buf)?;
        self.sock
            .wait_acks_or_fail("nftables batch", &self.seqs, Some(begin_seq))
    }
}

/// The names of the chains of `table` in `family` (empty when the table
/// does not exist).
pub fn list_chains(sock: &mut Socket, family: u8, table: &str) -> Result<Vec<String>, NlError> {
    let replies = sock.dump("list nftables chains", |seq| {
        Msg::new(msg_type(NFT_MSG_GETCHAIN), NLM_F_DUMP)
            .raw(&nfgen(family, 0))
            .finish(seq)
    });
    let replies = match replies {
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(Vec::new()),
        r => r?,
    };
    Ok(replies
        .iter()
        .filter_map(|r| {
            let list = attrs(r.payload.get(4..)?);
            if find_attr(&list, NFTA_CHAIN_TABLE).map(attr_str).as_deref() != Some(table) {
                return None;
            }
            find_attr(&list, NFTA_CHAIN_NAME).map(attr_str)
        })
        .collect())
}

/// Whether `table` exists in `family`.
pub fn table_exists(sock: &mut Socket, family: u8, table: &str) -> Result<bool, NlError> {
    const NFT_MSG_GETTABLE: u16 = 1;
    let r = sock.dump("get nftables table", |seq| {
        Msg::new(msg_type(NFT_MSG_GETTABLE), 0)
            .raw(&nfgen(family, 0))
            .str(NFTA_TABLE_NAME, table)
            .finish(seq)
    });
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The ruleset generation, for [`Batch::if_generation`].
pub fn generation(sock: &mut Socket) -> Result<u32, NlError> {
    let replies = sock.dump("get nftables generation", |seq| {
        Msg::new(msg_type(NFT_MSG_GETGEN), 0)
            .raw(&nfgen(0, 0))
            .finish(seq)
    })?;
    replies
        .first()
        .and_then(|r| {
            let list = attrs(r.payload.get(4..)?);
            let d = find_attr(&list, NFTA_GEN_ID)?;
            Some(u32::from_be_bytes(d.get(..4)?.try_into().ok()?))
        })
        .ok_or_else(|| NlError::Protocol("get nftables generation".into()))
}

/// Lists the rules of `table` in `family`; None when the table does not exist.
pub fn list_rules(
    sock: &mut Socket,
    family: u8,
    table: &str,
) -> Result<Option<Vec<RuleInfo>>, NlError> {
    let replies = sock.dump("list nftables rules", |seq| {
        Msg::new(msg_type(NFT_MSG_GETRULE), NLM_F_DUMP)
            .raw(&nfgen(family, 0))
            .str(NFTA_RULE_TABLE, table)
            .finish(seq)
    });
    let replies = match replies {
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
        r => r?,
    };
    let mut out = Vec::new();
    for r in replies {
        let Some(body) = r.payload.get(4..) else {
            continue;
        };
        let list = attrs(body);
        if find_attr(&list, NFTA_RULE_TABLE).map(attr_str).as_deref() != Some(table) {
            continue;
        }
        let handle = find_attr(&list, NFTA_RULE_HANDLE)
            .and_then(|d| d.try_into().ok())
            .map(u64::from_be_bytes);
        let (Some(chain), Some(handle)) = (find_attr(&list, NFTA_RULE_CHAIN).map(attr_str), handle)
        else {
            continue;
        };
        let comment = find_attr(&list, NFTA_RULE_USERDATA)
            .map(decode_comment)
            .unwrap_or_default();
        out.push(RuleInfo {
            chain,
            handle,
            comment,
        });
    }
    Ok(Some(out))
}

pub fn open() -> Result<Socket, NlError> {
    let s = Socket::open(libc::NETLINK_NETFILTER)?;
    s.set_recv_timeout(std::time::Duration::from_secs(5))?;
    Ok(s)
}
