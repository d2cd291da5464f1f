"""Named replies: every reply this package sends, in one place.

Codes from RFC 5321 4.2.2/4.2.3, enhanced codes from RFC 3463 and the
extension RFCs named beside each.  Servers built on this package use these
names rather than writing reply text by hand.
"""

from __future__ import annotations

from ._reply import Reply

# -- Success -----------------------------------------------------------------
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
MESSAGE_ACCEPTED = Reply(250, "2.0.0", "Message accepted")
BYE = Reply(221, "2.0.0", "Bye")
HELP = Reply(214, "2.0.0", "See RFC 5321 and https://www.rfc-editor.org/")
#: RFC 5321 3.5.3: "252 Cannot VRFY user, but will accept message and
#: attempt delivery" (RFC 3463 X.5.0 would also do; 2.5.0 is the common use).
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message")
START_MAIL_INPUT = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
#: RFC 3207 4.
READY_TO_START_TLS = Reply(220, "2.0.0", "Ready to start TLS")
#: RFC 4954 6.
AUTH_SUCCESSFUL = Reply(235, "2.7.0", "Authentication successful")

# -- Transient failures --------------------------------------------------------
#: RFC 5321 4.5.3.1.10 "452 Too many recipients"; RFC 3463 X.5.3.
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
#: RFC 5321 4.5.3.2 / 3.8: a timeout closes the session; RFC 3463 X.4.2.
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")
#: RFC 3463 X.3.2 "System not accepting network messages".
TOO_BUSY = Reply(421, "4.3.2", "Too many connections, try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Server shutting down, try again later")
#: A hook failed: the message is not lost, the client tries again.
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
#: A BDAT line without a readable chunk size (RFC 3030 2): where its chunk
#: ends is unknown, so nothing after it can be told from chunk data.
BDAT_SIZE_UNREADABLE = Reply(421, "4.5.4", "Syntax: BDAT size [LAST]; closing connection")
#: RFC 3207 4.
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available due to temporary reason")

# -- Permanent failures --------------------------------------------------------
#: RFC 5321 4.2.4 and RFC 3463 X.5.1 "Invalid command".
COMMAND_UNRECOGNIZED = Reply(500, "5.5.1", "Command unrecognized")
#: RFC 5321 4.5.3.1.10 "500 Line too long"; X.5.6 as RFC 4954 registers it.
LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")
#: RFC 3463 X.5.2 "Syntax error".
SYNTAX_ERROR = Reply(501, "5.5.2", "Syntax error")
#: RFC 5321 2.4: commands are ASCII, without control characters (TAB, NUL
#: and the rest), unless RFC 6531 allows UTF-8 in MAIL and RCPT.
EIGHT_BIT_COMMAND = Reply(500, "5.5.2", "Control or 8-bit characters not allowed in commands")
#: RFC 3463 X.5.4 "Invalid command arguments".
ARGUMENT_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
NO_ARGUMENTS_ALLOWED = Reply(501, "5.5.4", "Syntax error, no parameters allowed")
#: RFC 5321 4.1.4 and RFC 3463 X.5.1.
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
#: RFC 5321 4.1.1.11 / 4.2.3: "555 MAIL FROM/RCPT TO parameters not
#: recognized or not implemented".
PARAMETER_NOT_RECOGNIZED = Reply(555, "5.5.4", "Parameter not recognized or not implemented")
#: RFC 3463 X.1.3 "Bad destination mailbox address syntax".
ADDRESS_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
#: RFC 3463 X.1.7 "Bad sender's mailbox address syntax".
SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
#: RFC 5321 4.5.3.1.10 "501 Path too long".
PATH_TOO_LONG = Reply(501, "5.1.3", "Path too long")
SENDER_PATH_TOO_LONG = Reply(501, "5.1.7", "Path too long")
#: RFC 6531 3.7.4.1: an address needs SMTPUTF8 the client did not ask for.
NON_ASCII_ADDRESS = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
#: RFC 1870 6.1 and RFC 3463 X.3.4 "Message too big for system".
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
#: RFC 5321 3.3: DATA after MAIL whose every RCPT was rejected.
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
#: RFC 5321 2.3.8: CR and LF only as CRLF.  Smuggling defence (SEC Consult,
#: Dec 2023): the message is refused, never split.
BARE_LINE_ENDING = Reply(554, "5.6.0", "Message contains bare CR or LF")
#: RFC 3030 2: BINARYMIME content cannot travel with DATA.
BINARYMIME_NEEDS_BDAT = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT")
#: RFC 3207 4 / RFC 4954 6.
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
#: RFC 4954 6.
ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
#: RFC 4954 4.
AUTH_MECHANISM_UNKNOWN = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64 response")
#: RFC 4954 6.
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
#: RFC 8689 5: REQUIRETLS on a session without TLS.
REQUIRETLS_NEEDS_TLS = Reply(530, "5.7.10", "REQUIRETLS needs a TLS session")
#: RFC 5321 3.1: after a 554 greeting, everything but QUIT gets 503.
NO_SERVICE = Reply(503, "5.5.1", "No service here, please QUIT")
