"""Protocol limits, each a named constant that cites where it comes from."""

from __future__ import annotations

#: RFC 5321 4.5.3.1.4: "The maximum total length of a command line including
#: the command word and the <CRLF> is 512 octets."
MAX_COMMAND_LINE = 512

#: RFC 5321 4.5.3.1.5: "The maximum total length of a reply line including the
#: reply code and the <CRLF> is 512 octets."
MAX_REPLY_LINE = 512

#: RFC 5321 4.5.3.1.6: "The maximum total length of a text line including the
#: <CRLF> is 1000 octets (not counting the leading dot duplicated for
#: transparency)."
MAX_TEXT_LINE = 1000

#: RFC 5321 4.5.3.1.1: "The maximum total length of a user name or other
#: local-part is 64 octets."
MAX_LOCAL_PART = 64

#: RFC 5321 4.5.3.1.2: "The maximum total length of a domain name or number is
#: 255 octets."
MAX_DOMAIN = 255

#: RFC 5321 4.5.3.1.3: "The maximum total length of a reverse-path or
#: forward-path is 256 octets (including the punctuation and element
#: separators)."
MAX_PATH = 256

#: RFC 1035 2.3.4: labels are 63 octets or less.
MAX_LABEL = 63

#: RFC 5321 4.5.3.1.8: "The minimum total number of recipients that MUST be
#: buffered is 100 recipients."
MIN_RECIPIENTS = 100

#: RFC 4954 4: the AUTH command and the client's responses to 334 challenges
#: may be up to 12288 octets long, CRLF included.
MAX_AUTH_LINE = 12288

#: How much longer than the base limit a MAIL command line may be, for the
#: parameters of the extensions this package parses: SIZE (RFC 1870: 26), the
#: DSN parameters ENVID and RET (RFC 3461: 100), AUTH= (RFC 4954 5: 500), and
#: room for BODY=, SMTPUTF8 and REQUIRETLS, whose RFCs name no figure (50).
MAIL_LINE_ALLOWANCE = 26 + 100 + 500 + 50

#: How much longer than the base limit an RCPT command line may be, for the
#: DSN parameters NOTIFY and ORCPT (RFC 3461: 500).
RCPT_LINE_ALLOWANCE = 500

#: A client reading replies accepts lines up to this long (CRLF included).
#: Servers should keep to 512 (RFC 5321 4.5.3.1.5), but a client is liberal in
#: what it accepts, within a bound.
MAX_REPLY_LINE_READ = 2048

#: A client reading a multi-line reply gives up after this many lines: an EHLO
#: reply of a real server has a few dozen at most.
MAX_REPLY_LINES = 256
