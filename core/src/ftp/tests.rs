//! Parser vectors, one named `#[test]` per table row (as ripgrep globset's `syntax!` does), and
//! proptests: no input panics any parser, and every address we can format round-trips.
//!
//! Each row carries a comment naming its source. Server and client forms were read in their
//! sources: vsftpd 3.0.2 postlogin.c, pure-ftpd src/ftpd.c (git 5008fca), proftpd 1.3.10rc5
//! modules/mod_core.c, pyftpdlib 2.2.1 handlers/ftp/dispatchers.py, FileZilla Server 1.7.3
//! src/filezilla/ftp/commander.cpp, curl lib/ftp.c, lftp src/ftpclass.cc, CPython
//! Lib/ftplib.py, FreeBSD libfetch ftp.c. Microsoft IIS lines come from captured sessions
//! ("220 Microsoft FTP Service" banners) and Microsoft KB 283679.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proptest::prelude::*;

use super::Command::*;
use super::ParseError::*;
use super::{parse_227, parse_228, parse_229, parse_command, parse_reply_line, ReplyLine};

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from(a), port)
}

fn v6(text: &str, port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(text.parse().expect("test address is valid")),
        port,
    )
}

/// One row: `name: input => expected;` becomes `#[test] fn name()`, so a failure names its row.
macro_rules! vectors {
    ($parser:ident { $($name:ident: $input:expr => $want:expr;)* }) => {
        $(
            #[test]
            fn $name() {
                let input: &[u8] = $input;
                assert_eq!($parser(input), $want, "input: \"{}\"", input.escape_ascii());
            }
        )*
    };
}

mod command {
    use super::*;

    vectors!(parse_command {
        // RFC 959 §4.1.2: PORT h1,h2,h3,h4,p1,p2
        port_rfc959: b"PORT 192,0,2,10,195,80" => Ok(Port(v4([192, 0, 2, 10], 50000)));
        // Microsoft KB 283679 (IIS FTP service doc): what Windows ftp.exe sends
        port_windows_ftp_kb283679: b"PORT 192,168,0,3,19,243" => Ok(Port(v4([192, 168, 0, 3], 5107)));
        // curl lib/ftp.c ftp_state_use_port: dotted quad with '.' -> ',' then ",%d,%d"
        port_curl: b"PORT 192,0,2,10,200,17" => Ok(Port(v4([192, 0, 2, 10], 51217)));
        // lftp src/ftpclass.cc: "PORT %d,%d,%d,%d,%d,%d"
        port_lftp: b"PORT 10,0,0,1,4,1" => Ok(Port(v4([10, 0, 0, 1], 1025)));
        // CPython Lib/ftplib.py sendport: 'PORT ' + ','.join(hbytes + pbytes)
        port_ftplib: b"PORT 127,0,0,1,156,64" => Ok(Port(v4([127, 0, 0, 1], 40000)));
        // RFC 959 §5.3: command verbs are case-insensitive
        port_lowercase_verb: b"port 192,0,2,10,195,80" => Ok(Port(v4([192, 0, 2, 10], 50000)));
        // module decision: the argument is trimmed at both ends
        port_extra_spaces: b"PORT  192,0,2,10,195,80 " => Ok(Port(v4([192, 0, 2, 10], 50000)));
        // module decision: leading zeros are decimal, not octal
        port_leading_zeros: b"PORT 192,000,002,010,195,080" => Ok(Port(v4([192, 0, 2, 10], 50000)));
        // module decision: port 0 is returned; policy refuses low ports
        port_zero: b"PORT 192,0,2,10,0,0" => Ok(Port(v4([192, 0, 2, 10], 0)));
        // RFC 959 §4.1.2: every field is a byte, 255 included
        port_all_255: b"PORT 255,255,255,255,255,255" => Ok(Port(v4([255, 255, 255, 255], 65535)));
        // negative: bare verb
        port_missing_argument: b"PORT" => Err(MissingArgument);
        // negative: verb and space only
        port_blank_argument: b"PORT  " => Err(MissingArgument);
        // negative: missing field
        port_five_fields: b"PORT 192,0,2,10,195" => Err(TooFewFields);
        // negative: extra field
        port_seven_fields: b"PORT 192,0,2,10,195,80,1" => Err(TooManyFields);
        // negative: trailing comma is an empty seventh field
        port_trailing_comma: b"PORT 192,0,2,10,195,80," => Err(TooManyFields);
        // negative: empty field
        port_empty_field: b"PORT 192,,2,10,195,80" => Err(NotANumber);
        // negative: address byte > 255, no modulo
        port_address_256: b"PORT 256,0,2,10,195,80" => Err(NumberTooLarge);
        // negative: port byte > 255, no modulo
        port_port_byte_256: b"PORT 192,0,2,10,256,80" => Err(NumberTooLarge);
        // negative: overflow of any integer
        port_huge_number: b"PORT 192,0,2,10,195,800000000000000000000000000000000" => Err(NumberTooLarge);
        // negative: 2^32 + 192 would wrap to 192 in a u32
        port_u32_wrap: b"PORT 4294967488,0,2,10,195,80" => Err(NumberTooLarge);
        // module decision: no spaces around commas
        port_spaces_after_commas: b"PORT 192, 0, 2, 10, 195, 80" => Err(NotANumber);
        // negative: sign
        port_negative: b"PORT -1,0,2,10,195,80" => Err(NotANumber);
        // negative: NUL inside the list
        port_nul: b"PORT 192,0\0,2,10,195,80" => Err(TooFewFields);
        // negative: non-ASCII digit (U+0660 ARABIC-INDIC DIGIT ZERO) after the last field
        port_non_ascii_digit: b"PORT 192,0,2,10,195,8\xd9\xa0" => Err(Malformed);
        // negative: 227-style parentheses are not PORT syntax
        port_parentheses: b"PORT (192,0,2,10,195,80)" => Err(NotANumber);
        // negative: trailing garbage
        port_trailing_text: b"PORT 192,0,2,10,195,80x" => Err(Malformed);

        // RFC 2428 §2 example 1
        eprt_rfc2428_v4: b"EPRT |1|132.235.1.2|6275|" => Ok(Eprt(v4([132, 235, 1, 2], 6275)));
        // RFC 2428 §2 example 2
        eprt_rfc2428_v6: b"EPRT |2|1080::8:800:200C:417A|5282|" => Ok(Eprt(v6("1080::8:800:200c:417a", 5282)));
        // curl lib/ftp.c: "%s |%d|%s|%hu|"
        eprt_curl_v6: b"EPRT |2|2001:db8::10|50000|" => Ok(Eprt(v6("2001:db8::10", 50000)));
        // lftp src/ftpclass.cc encode_eprt "|%d|%s|%d|": the IPv6 path does not replace an unbound ::
        eprt_lftp_unspecified_v6: b"EPRT |2|::|50000|" => Ok(Eprt(v6("::", 50000)));
        // module contract: unspecified IPv4 is returned as is
        eprt_unspecified_v4: b"EPRT |1|0.0.0.0|50000|" => Ok(Eprt(v4([0, 0, 0, 0], 50000)));
        // CPython Lib/ftplib.py sendeprt: 'EPRT ' + '|'.join(['', af, host, port, ''])
        eprt_ftplib_v4: b"EPRT |1|192.0.2.10|50000|" => Ok(Eprt(v4([192, 0, 2, 10], 50000)));
        // RFC 2428 §2: any delimiter in 33..=126
        eprt_bang_delimiter: b"EPRT !2!2001:db8::10!50000!" => Ok(Eprt(v6("2001:db8::10", 50000)));
        // module contract: IPv4-mapped IPv6 is returned as is (policy compares with the sender)
        eprt_v4_mapped: b"EPRT |2|::ffff:192.0.2.10|50000|" => Ok(Eprt(v6("::ffff:192.0.2.10", 50000)));
        // RFC 959 §5.3: case-insensitive verb
        eprt_lowercase_verb: b"eprt |1|192.0.2.10|50000|" => Ok(Eprt(v4([192, 0, 2, 10], 50000)));
        // negative: bare verb
        eprt_missing_argument: b"EPRT" => Err(MissingArgument);
        // negative: RFC 2428 defines families 1 and 2 only
        eprt_family_3: b"EPRT |3|192.0.2.10|50000|" => Err(UnsupportedFamily);
        // negative: empty family
        eprt_family_empty: b"EPRT ||192.0.2.10|50000|" => Err(NotANumber);
        // negative: IPv6 text under family 1
        eprt_v6_text_family_1: b"EPRT |1|2001:db8::10|50000|" => Err(BadAddress);
        // negative: IPv4 text under family 2
        eprt_v4_text_family_2: b"EPRT |2|192.0.2.10|50000|" => Err(BadAddress);
        // negative: zone index is not part of RFC 2428 address text
        eprt_zone_index: b"EPRT |2|fe80::1%em0|50000|" => Err(BadAddress);
        // negative: non-ASCII (U+00B9 SUPERSCRIPT ONE)
        eprt_non_ascii: b"EPRT |1|192.0.2.\xc2\xb9|50000|" => Err(BadAddress);
        // negative: NUL in the address
        eprt_nul_in_address: b"EPRT |1|192.0.2.10\0|50000|" => Err(BadAddress);
        // negative: std's dotted quad has no leading zeros (octal ambiguity)
        eprt_leading_zero_octet: b"EPRT |1|192.000.002.010|50000|" => Err(BadAddress);
        // negative: empty address
        eprt_empty_address: b"EPRT |1||50000|" => Err(BadAddress);
        // negative: RFC 2428 §2 port is a TCP port, 0 is none
        eprt_port_zero: b"EPRT |1|192.0.2.10|0|" => Err(PortZero);
        // negative: port > 65535
        eprt_port_65536: b"EPRT |1|192.0.2.10|65536|" => Err(NumberTooLarge);
        // negative: overflow
        eprt_port_huge: b"EPRT |1|192.0.2.10|99999999999999999999999|" => Err(NumberTooLarge);
        // negative: empty port
        eprt_port_empty: b"EPRT |1|192.0.2.10||" => Err(NotANumber);
        // negative: closing delimiter missing
        eprt_no_closing_delimiter: b"EPRT |1|192.0.2.10|50000" => Err(TooFewFields);
        // negative: extra field
        eprt_extra_field: b"EPRT |1|192.0.2.10|50000|7|" => Err(TooManyFields);
        // negative: trailing garbage after the closing delimiter
        eprt_trailing_text: b"EPRT |1|192.0.2.10|50000|x" => Err(Malformed);
        // negative: Linux nf_conntrack_ftp notes: a digit delimiter is refused
        eprt_digit_delimiter: b"EPRT 919192.0.2.109500009" => Err(BadDelimiter);
        // negative: DEL (127) is outside 33..=126
        eprt_del_delimiter: b"EPRT \x7f1\x7f192.0.2.10\x7f50000\x7f" => Err(BadDelimiter);
        // negative: non-ASCII delimiter
        eprt_high_delimiter: b"EPRT \x801\x80192.0.2.10\x8050000\x80" => Err(BadDelimiter);
        // negative: delimiters differ, so the first one never comes back
        eprt_mismatched_delimiters: b"EPRT |1!192.0.2.10!50000!" => Err(TooFewFields);

        // FreeBSD libfetch ftp.c: "LPRT %d,%d,...", 6, 16, 16 bytes, 2, p1, p2
        lprt_libfetch_v6: b"LPRT 6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,16,2,195,80" => Ok(Lprt(v6("2001:db8::10", 50000)));
        // RFC 1639 §2: af 4, hal 4, pal 2
        lprt_rfc1639_v4: b"LPRT 4,4,192,0,2,10,2,195,80" => Ok(Lprt(v4([192, 0, 2, 10], 50000)));
        // RFC 959 §5.3: case-insensitive verb
        lprt_lowercase_verb: b"lprt 4,4,192,0,2,10,2,195,80" => Ok(Lprt(v4([192, 0, 2, 10], 50000)));
        // negative: bare verb
        lprt_missing_argument: b"LPRT" => Err(MissingArgument);
        // negative: unknown family
        lprt_family_5: b"LPRT 5,4,192,0,2,10,2,195,80" => Err(UnsupportedFamily);
        // negative: family 4 with 16 address bytes
        lprt_length_mismatch: b"LPRT 4,16,192,0,2,10,2,195,80" => Err(UnsupportedFamily);
        // negative: port length 3
        lprt_port_length_3: b"LPRT 4,4,192,0,2,10,3,0,195,80" => Err(UnsupportedFamily);
        // negative: last port byte missing
        lprt_short: b"LPRT 6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,16,2,195" => Err(TooFewFields);
        // negative: extra field
        lprt_extra_field: b"LPRT 4,4,192,0,2,10,2,195,80,1" => Err(TooManyFields);
        // negative: byte > 255
        lprt_byte_300: b"LPRT 4,4,300,0,2,10,2,195,80" => Err(NumberTooLarge);

        // RFC 959 §4.1.1
        pasv: b"PASV" => Ok(Pasv);
        // RFC 959 §5.3: case-insensitive
        pasv_lowercase: b"pasv" => Ok(Pasv);
        // module decision: PASV ignores an argument, the server decides
        pasv_with_argument: b"PASV x" => Ok(Pasv);
        // RFC 1639 §2
        lpsv: b"LPSV" => Ok(Lpsv);
        // RFC 2428 §3
        epsv: b"EPSV" => Ok(Epsv);
        // RFC 2428 §3: EPSV <net-prt>, 1 = IPv4
        epsv_1: b"EPSV 1" => Ok(Epsv);
        // RFC 2428 §3: 2 = IPv6
        epsv_2: b"EPSV 2" => Ok(Epsv);
        // RFC 2428 §4
        epsv_all: b"EPSV ALL" => Ok(EpsvAll);
        // RFC 959 §5.3: case-insensitive verb and argument
        epsv_all_lowercase: b"epsv all" => Ok(EpsvAll);
        // negative: family 3
        epsv_3: b"EPSV 3" => Err(UnsupportedFamily);
        // negative: neither a family nor ALL
        epsv_garbage: b"EPSV foo" => Err(NotANumber);
        // negative: overflow
        epsv_huge: b"EPSV 99999999999999999999" => Err(NumberTooLarge);

        // RFC 4217 §4
        auth_tls: b"AUTH TLS" => Ok(Auth);
        // RFC 4217 §4, historical SSL mechanism, lowercase
        auth_ssl_lowercase: b"auth ssl" => Ok(Auth);
        // module decision: bare AUTH still means "watch for 234"
        auth_bare: b"AUTH" => Ok(Auth);

        // RFC 959 §4.1.1
        other_user: b"USER anonymous" => Ok(Other);
        // RFC 959 §4.1.3: a command whose argument looks like PORT's is still Other
        other_retr: b"RETR 192,0,2,10,195,80" => Ok(Other);
        // negative: empty line
        other_empty: b"" => Ok(Other);
        // the verb ends at the first space only
        other_longer_verb: b"PORTX 192,0,2,10,195,80" => Ok(Other);
        // module decision: a leading space makes the verb empty
        other_leading_space: b" PORT 192,0,2,10,195,80" => Ok(Other);
        // negative: NUL inside the verb
        other_nul_in_verb: b"PO\0RT 192,0,2,10,195,80" => Ok(Other);
        // RFC 959 §4.1.3 ABOR preceded by Telnet IP and Synch (IAC IP IAC DM)
        other_telnet_abor: b"\xff\xf4\xff\xf2ABOR" => Ok(Other);
    });
}

mod reply_line {
    use super::*;

    fn reply(code: u16, continues: bool, text: &[u8]) -> Option<ReplyLine<'_>> {
        Some(ReplyLine {
            code,
            continues,
            text,
        })
    }

    vectors!(parse_reply_line {
        // RFC 959 §4.2: final line "NNN text"
        final_line: b"227 Entering Passive Mode (192,0,2,1,195,80)." => reply(227, false, b"Entering Passive Mode (192,0,2,1,195,80).");
        // RFC 959 §4.2: first line of a multi-line reply "NNN-text"
        first_multiline: b"230-Welcome" => reply(230, true, b"Welcome");
        // RFC 959 §4.2: code alone
        bare_code: b"226" => reply(226, false, b"");
        // RFC 959 §4.2: hyphen and nothing else
        bare_hyphen: b"220-" => reply(220, true, b"");
        // RFC 959 §4.2: lowest first digit
        code_100: b"150 Opening" => reply(150, false, b"Opening");
        // RFC 959 §4.2: highest first digit
        code_599: b"599 x" => reply(599, false, b"x");
        // the text keeps any bytes
        text_binary: b"227 \0\xff" => reply(227, false, b"\0\xff");
        // negative: RFC 959 §4.2 continuation line indented by the server
        leading_space: b" 227 Entering Passive Mode (192,0,2,1,195,80)" => None;
        // negative: four digits
        four_digits: b"2270 x" => None;
        // negative: two digits
        two_digits: b"22 x" => None;
        // negative: empty line
        empty: b"" => None;
        // negative: first digit 0
        first_digit_0: b"027 x" => None;
        // negative: first digit 6
        first_digit_6: b"627 x" => None;
        // negative: letter in the code
        letter_in_code: b"22a x" => None;
        // negative: tab is not a separator
        tab_separator: b"227\tx" => None;
        // negative: NUL is not a separator
        nul_separator: b"227\0" => None;
        // negative: non-ASCII
        non_ascii: b"\xff\xff\xff" => None;
    });
}

mod pasv_227 {
    use super::*;

    vectors!(parse_227 {
        // vsftpd 3.0.2 postlogin.c handle_pasv: "Entering Passive Mode (" addr ",p1,p2)."
        vsftpd: b"Entering Passive Mode (192,0,2,1,195,80)." => Ok(v4([192, 0, 2, 1], 50000));
        // vsftpd 3.0.2 postlogin.c: IPv6 control connection without a mapped address -> "0,0,0,0"
        vsftpd_ipv6_control: b"Entering Passive Mode (0,0,0,0,195,80)." => Ok(v4([0, 0, 0, 0], 50000));
        // pure-ftpd src/ftpd.c dopasv: "Entering Passive Mode (%lu,%lu,%lu,%lu,%u,%u)"
        pure_ftpd: b"Entering Passive Mode (192,0,2,1,195,80)" => Ok(v4([192, 0, 2, 1], 50000));
        // proftpd 1.3.10rc5 modules/mod_core.c core_pasv: "Entering Passive Mode (%s,%u,%u)."
        proftpd: b"Entering Passive Mode (198,51,100,7,39,16)." => Ok(v4([198, 51, 100, 7], 10000));
        // pyftpdlib 2.2.1 handlers/ftp/dispatchers.py: "227 Entering passive mode (%s,%d,%d)."
        pyftpdlib: b"Entering passive mode (127,0,0,1,234,96)." => Ok(v4([127, 0, 0, 1], 60000));
        // FileZilla Server 1.7.3 commander.cpp: "Entering Passive Mode" ' ' "(ip,p1,p2)"
        filezilla_server: b"Entering Passive Mode (203,0,113,5,255,255)" => Ok(v4([203, 0, 113, 5], 65535));
        // Microsoft IIS, captured session after "220 Microsoft FTP Service"
        microsoft_iis: b"Entering Passive Mode (192,168,253,245,192,211)." => Ok(v4([192, 168, 253, 245], 49363));
        // DJB publicfile, http://cr.yp.to/ftp/retr.html: "227 =h1,h2,h3,h4,p1,p2"
        djb_publicfile: b"=192,0,2,1,195,80" => Ok(v4([192, 0, 2, 1], 50000));
        // RFC 1123 §4.1.2.6: parentheses may be missing
        no_parentheses: b"Entering Passive Mode 192,0,2,1,195,80" => Ok(v4([192, 0, 2, 1], 50000));
        // RFC 1123 §4.1.2.6: numbers only
        numbers_only: b"192,0,2,1,195,80" => Ok(v4([192, 0, 2, 1], 50000));
        // RFC 1123 §4.1.2.6: any text may follow
        trailing_text: b"Entering Passive Mode (192,0,2,1,195,80). Have fun 123" => Ok(v4([192, 0, 2, 1], 50000));
        // module decision: port 0 is returned; policy refuses low ports
        port_zero: b"Entering Passive Mode (192,0,2,1,0,0)." => Ok(v4([192, 0, 2, 1], 0));
        // negative: no digit at all
        no_digits: b"Entering Passive Mode" => Err(NotFound);
        // negative: empty text
        empty: b"" => Err(NotFound);
        // negative: missing field
        five_fields: b"Entering Passive Mode (192,0,2,1,195)." => Err(TooFewFields);
        // negative: extra field
        seven_fields: b"Entering Passive Mode (192,0,2,1,195,80,1)." => Err(TooManyFields);
        // negative: trailing comma
        trailing_comma: b"Entering Passive Mode (192,0,2,1,195,80,)." => Err(TooManyFields);
        // negative: address byte > 255, no modulo
        address_256: b"Entering Passive Mode (256,0,2,1,195,80)." => Err(NumberTooLarge);
        // negative: curl tests/data/test237 "(1216,256,2,127,127,127)"
        curl_test237: b"Entering Passive Mode (1216,256,2,127,127,127)" => Err(NumberTooLarge);
        // negative: port byte > 255, no modulo (DJB's client advice does not apply to us)
        port_byte_300: b"Entering Passive Mode (192,0,2,1,300,80)." => Err(NumberTooLarge);
        // negative: overflow
        huge_number: b"Entering Passive Mode (192,0,2,1,195,99999999999999999999999)." => Err(NumberTooLarge);
        // negative: empty field
        empty_field: b"Entering Passive Mode (192,,2,1,195,80)." => Err(NotANumber);
        // module decision: no spaces around commas
        spaces_after_commas: b"Entering Passive Mode (192, 0, 2, 1, 195, 80)." => Err(NotANumber);
        // negative: NUL inside the list
        nul: b"Entering Passive Mode (192,0,2\0,1,195,80)." => Err(TooFewFields);
        // negative: FULLWIDTH DIGIT ONE is not a digit; the scan starts at the '0' after it
        fullwidth_digit: b"Entering Passive Mode (\xef\xbc\x91,0,2,1,195,80)." => Err(TooFewFields);
        // RFC 1123 §4.1.2.6 taken literally: a digit in the prose starts the scan
        digit_in_prose: b"Entering Passive Mode v2 (192,0,2,1,195,80)." => Err(TooFewFields);
    });
}

mod lpsv_228 {
    use super::*;

    vectors!(parse_228 {
        // RFC 1639 §2 / curl lib/ftp.c comment: "228 Entering Long Passive Mode (4,4,a1,a2,a3,a4,2,p1,p2)"
        rfc1639_v4: b"Entering Long Passive Mode (4,4,192,0,2,1,2,195,80)" => Ok(v4([192, 0, 2, 1], 50000));
        // RFC 1639 §2: IPv6, af 6, hal 16
        rfc1639_v6: b"Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,33,2,195,80)" => Ok(v6("2001:db8::21", 50000));
        // a BSD ftpd.c in the code index, LPSV case: reply(228, "Entering Passive Mode (%s)", ...)
        bsd_ftpd: b"Entering Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,33,2,195,80)" => Ok(v6("2001:db8::21", 50000));
        // RFC 1123 §4.1.2.6 scanning applied to 228: trailing text
        trailing_text: b"Entering Long Passive Mode (4,4,192,0,2,1,2,0,21). ok" => Ok(v4([192, 0, 2, 1], 21));
        // negative: no digit
        no_digits: b"Entering Long Passive Mode" => Err(NotFound);
        // negative: unknown family
        family_5: b"Entering Long Passive Mode (5,4,192,0,2,1,2,195,80)" => Err(UnsupportedFamily);
        // negative: family 6 with 4 bytes
        length_mismatch: b"Entering Long Passive Mode (6,4,192,0,2,1,2,195,80)" => Err(UnsupportedFamily);
        // negative: port length 1
        port_length_1: b"Entering Long Passive Mode (4,4,192,0,2,1,1,80)" => Err(UnsupportedFamily);
        // negative: address cut short
        short: b"Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0)" => Err(TooFewFields);
        // negative: extra field
        extra_field: b"Entering Long Passive Mode (4,4,192,0,2,1,2,195,80,9)" => Err(TooManyFields);
        // negative: byte > 255
        byte_256: b"Entering Long Passive Mode (4,4,192,0,2,256,2,195,80)" => Err(NumberTooLarge);
    });
}

mod epsv_229 {
    use super::*;

    vectors!(parse_229 {
        // RFC 2428 §3 example
        rfc2428: b"Entering Extended Passive Mode (|||6446|)" => Ok(6446);
        // vsftpd 3.0.2 postlogin.c handle_pasv: "Entering Extended Passive Mode (|||" port "|)."
        vsftpd: b"Entering Extended Passive Mode (|||50000|)." => Ok(50000);
        // pure-ftpd src/ftpd.c dopasv: "Extended Passive mode OK (|||%u|)"
        pure_ftpd: b"Extended Passive mode OK (|||50001|)" => Ok(50001);
        // proftpd 1.3.10rc5 mod_core.c core_epsv: "Entering Extended Passive Mode (||%s|%u|)", %s = ""
        proftpd: b"Entering Extended Passive Mode (|||50002|)" => Ok(50002);
        // pyftpdlib 2.2.1 handlers/ftp/dispatchers.py: "229 Entering extended passive mode (|||{port}|)."
        pyftpdlib: b"Entering extended passive mode (|||60000|)." => Ok(60000);
        // FileZilla Server 1.7.3 commander.cpp: "Entering Extended Passive Mode" ' ' "(|||" port "|)"
        filezilla_server: b"Entering Extended Passive Mode (|||65535|)" => Ok(65535);
        // Microsoft IIS, captured session after "220 Microsoft FTP Service"
        microsoft_iis: b"Entering Extended Passive Mode (|||49403|)" => Ok(49403);
        // RFC 2428 §3: any delimiter in 33..=126
        bang_delimiter: b"Entering Extended Passive Mode (!!!6446!)" => Ok(6446);
        // module decision: leading zeros are decimal
        leading_zeros: b"Entering Extended Passive Mode (|||06446|)" => Ok(6446);
        // module decision: the closing parenthesis is not checked
        no_closing_parenthesis: b"Entering Extended Passive Mode (|||6446|" => Ok(6446);
        // negative: no '('
        no_parenthesis: b"Entering Extended Passive Mode |||6446|" => Err(NotFound);
        // negative: empty text
        empty: b"" => Err(NotFound);
        // negative: RFC 2428 §3 reply carries no address
        address_filled_v6: b"Entering Extended Passive Mode (|2|2001:db8::21|6446|)" => Err(UnexpectedAddress);
        // negative: same with IPv4
        address_filled_v4: b"Entering Extended Passive Mode (|1|192.0.2.1|6446|)" => Err(UnexpectedAddress);
        // negative: proftpd mod_core.c MasqueradeAddress form (compiled out, #if 0)
        proftpd_masquerade: b"Entering Extended Passive Mode (||192.0.2.1|6446|)" => Err(UnexpectedAddress);
        // negative: second delimiter differs
        mismatch_second: b"Entering Extended Passive Mode (|!|6446|)" => Err(BadDelimiter);
        // negative: first delimiter differs
        mismatch_first: b"Entering Extended Passive Mode (!||6446|)" => Err(BadDelimiter);
        // negative: closing delimiter differs
        mismatch_closing: b"Entering Extended Passive Mode (|||6446!)" => Err(BadDelimiter);
        // negative: Linux nf_conntrack_ftp notes: a digit delimiter is refused
        digit_delimiter: b"Entering Extended Passive Mode (11164461)" => Err(BadDelimiter);
        // negative: space is outside 33..=126
        space_delimiter: b"Entering Extended Passive Mode (   6446 )" => Err(BadDelimiter);
        // negative: DEL is outside 33..=126
        del_delimiter: b"Entering Extended Passive Mode (\x7f\x7f\x7f6446\x7f)" => Err(BadDelimiter);
        // negative: NUL inside the port
        nul_in_port: b"Entering Extended Passive Mode (|||64\x0046|)" => Err(BadDelimiter);
        // negative: RFC 2428 §3 port is a TCP port
        port_zero: b"Entering Extended Passive Mode (|||0|)" => Err(PortZero);
        // negative: port > 65535
        port_65536: b"Entering Extended Passive Mode (|||65536|)" => Err(NumberTooLarge);
        // negative: overflow
        port_huge: b"Entering Extended Passive Mode (|||99999999999999999999999|)" => Err(NumberTooLarge);
        // negative: empty port
        port_empty: b"Entering Extended Passive Mode (||||)" => Err(NotANumber);
        // negative: letters
        port_letters: b"Entering Extended Passive Mode (|||abc|)" => Err(NotANumber);
        // negative: non-ASCII digit (U+0661) in the port
        port_non_ascii: b"Entering Extended Passive Mode (|||\xd9\xa1|)" => Err(NotANumber);
        // negative: text ends after the port
        truncated_after_port: b"Entering Extended Passive Mode (|||6446" => Err(TooFewFields);
        // negative: text ends after '('
        truncated_after_parenthesis: b"Entering Extended Passive Mode (" => Err(TooFewFields);
        // negative: text ends after two delimiters
        truncated_delimiters: b"Entering Extended Passive Mode (||" => Err(TooFewFields);
    });
}

/// Bytes that steer the parsers deep into their fields, so random lines get past the verb.
fn interesting_line() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop::sample::select(vec![
        &b""[..],
        b"PORT ",
        b"EPRT ",
        b"LPRT ",
        b"EPSV ",
        b"AUTH ",
        b"Entering Passive Mode (",
        b"Entering Extended Passive Mode (",
        b"227 ",
        b"229-",
        b"EPRT |2|",
        b"LPRT 6,16,",
    ]);
    let body = prop::collection::vec(
        prop::sample::select(b"0123456789,|!.:()aAfF% \0\xff-".to_vec()),
        0..96,
    );
    (prefix, body).prop_map(|(p, b)| [p, &b[..]].concat())
}

fn run_all(line: &[u8]) {
    let _ = parse_command(line);
    let _ = parse_reply_line(line);
    let _ = parse_227(line);
    let _ = parse_228(line);
    let _ = parse_229(line);
}

/// `af,hal,h1..hN,pal,p1,p2` for any address, as RFC 1639 §2 formats it.
fn long_form(addr: SocketAddr) -> String {
    let (af, bytes): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(ip) => (4, ip.octets().to_vec()),
        IpAddr::V6(ip) => (6, ip.octets().to_vec()),
    };
    let mut fields = vec![af.to_string(), bytes.len().to_string()];
    fields.extend(bytes.iter().map(u8::to_string));
    fields.push("2".into());
    fields.extend(addr.port().to_be_bytes().iter().map(u8::to_string));
    fields.join(",")
}

/// `h1,h2,h3,h4,p1,p2` as RFC 959 §4.1.2 formats it.
fn host_port(ip: Ipv4Addr, port: u16) -> String {
    let [h1, h2, h3, h4] = ip.octets();
    let [p1, p2] = port.to_be_bytes();
    format!("{h1},{h2},{h3},{h4},{p1},{p2}")
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(line in prop::collection::vec(any::<u8>(), 0..512)) {
        run_all(&line);
    }

    #[test]
    fn ftp_shaped_bytes_never_panic(line in interesting_line()) {
        run_all(&line);
    }

    #[test]
    fn port_round_trips(ip in any::<Ipv4Addr>(), port in any::<u16>()) {
        let line = format!("PORT {}", host_port(ip, port));
        prop_assert_eq!(parse_command(line.as_bytes()), Ok(Port(SocketAddr::from((ip, port)))));
    }

    #[test]
    fn pasv_227_round_trips(ip in any::<Ipv4Addr>(), port in any::<u16>()) {
        let text = format!("Entering Passive Mode ({}).", host_port(ip, port));
        prop_assert_eq!(parse_227(text.as_bytes()), Ok(SocketAddr::from((ip, port))));
    }

    #[test]
    fn eprt_round_trips(ip in any::<IpAddr>(), port in 1..=u16::MAX) {
        let af = if ip.is_ipv4() { 1 } else { 2 };
        let line = format!("EPRT |{af}|{ip}|{port}|");
        prop_assert_eq!(parse_command(line.as_bytes()), Ok(Eprt(SocketAddr::new(ip, port))));
    }

    #[test]
    fn lprt_round_trips(ip in any::<IpAddr>(), port in any::<u16>()) {
        let addr = SocketAddr::new(ip, port);
        let line = format!("LPRT {}", long_form(addr));
        prop_assert_eq!(parse_command(line.as_bytes()), Ok(Lprt(addr)));
    }

    #[test]
    fn lpsv_228_round_trips(ip in any::<IpAddr>(), port in any::<u16>()) {
        let addr = SocketAddr::new(ip, port);
        let text = format!("Entering Long Passive Mode ({})", long_form(addr));
        prop_assert_eq!(parse_228(text.as_bytes()), Ok(addr));
    }

    #[test]
    fn epsv_229_round_trips(port in 1..=u16::MAX, d in (33u8..=126).prop_filter("not a digit", |d| !d.is_ascii_digit())) {
        let d = char::from(d);
        let text = format!("Entering Extended Passive Mode ({d}{d}{d}{port}{d})");
        prop_assert_eq!(parse_229(text.as_bytes()), Ok(port));
    }

    #[test]
    fn reply_line_round_trips(code in 100u16..600, continues in any::<bool>(), text in prop::collection::vec(any::<u8>(), 0..64)) {
        let sep = if continues { b'-' } else { b' ' };
        let line = [code.to_string().as_bytes(), &[sep], &text].concat();
        prop_assert_eq!(parse_reply_line(&line), Some(ReplyLine { code, continues, text: &text }));
    }
}
