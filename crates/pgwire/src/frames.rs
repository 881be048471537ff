/*!
Every frontend frame is checked here before the `pgwire` crate decodes it.

Why: pgwire 0.42.1's decoders trust the client. They read a message's
fields with `bytes`' panicking getters (`get_u16`, `get_i32`, `split_to`)
from the whole read buffer, not from the frame: a count or a length that
runs past the frame reads on into the next message or panics ("advance out
of bounds"); a length field below 4 underflows (`len - 4`); a string
without its NUL is looked for in the messages after it; and bytes left over
after the fields are taken for the next message. Without this check,
`tests/fuzz.rs` panics a connection task in about one case in twelve. A
panic on client input is a defect, and a stream read out of step is worse.

[`Checked`] sits between the socket and pgwire's codec and hands pgwire a
message only once the whole frame has arrived and its body has been walked
field by field as PostgreSQL's protocol defines it ("Message Formats" in
the PostgreSQL documentation): every count and length inside the frame,
`-1` the only negative length (NULL), every string NUL-terminated inside
the frame, and nothing left over (PostgreSQL's "invalid message format").
Anything else ends the stream with a [`FrameError`], which the connection
loop answers with a `FATAL` `08P01` (protocol_violation) `ErrorResponse`
(`0A000` for a protocol version other than 3 and for FunctionCall, which
is not supported) before it closes the connection. A frame is refused as
soon as its header shows it is bad: an unknown type or an absurd length
fails at once, without waiting for a body that may never come.

The bounds are PostgreSQL's: 10,000 bytes for startup-phase packets and
for the small messages (its `MAX_STARTUP_PACKET_LENGTH` and
`PQ_SMALL_MESSAGE_LIMIT`, which pgwire applies too), and
[`MESSAGE_BYTES_MAX`] for those that carry SQL or data (Query, Parse, Bind,
CopyData) instead of PostgreSQL's 1 GiB.
*/

use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest Query, Parse, Bind or CopyData message accepted, length
/// field included: 16 MiB, the HTTP API's default request body limit. A
/// statement larger than that has no business in a replicated log entry.
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;

/// The largest startup-phase packet and the largest of the other messages
/// (PostgreSQL's `MAX_STARTUP_PACKET_LENGTH` and `PQ_SMALL_MESSAGE_LIMIT`).
pub const SMALL_MESSAGE_BYTES_MAX: usize = 10_000;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// A cancel key is 4 bytes in protocol 3.0, up to 256 in 3.2.
const CANCEL_BYTES: std::ops::RangeInclusive<usize> = 16..=12 + 256;

/// Why a frame was refused; the text is the `ErrorResponse`'s message.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    /// The SQLSTATE: `08P01` (protocol_violation), or `0A000`
    /// (feature_not_supported) for a protocol version other than 3 and for
    /// FunctionCall.
    pub code: &'static str,
    message: String,
}

impl FrameError {
    fn violation(message: String) -> Self {
        FrameError {
            code: "08P01",
            message,
        }
    }

    fn unsupported(message: String) -> Self {
        FrameError {
            code: "0A000",
            message,
        }
    }

    /// The frame error that ended a stream, if that is what `e` is.
    pub fn of(e: &pgwire::error::PgWireError) -> Option<&FrameError> {
        match e {
            pgwire::error::PgWireError::IoError(io) => io.get_ref()?.downcast_ref(),
            _ => None,
        }
    }
}

/// Where the connection is in the protocol: which kind of frame comes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Untyped packets: at most one SSLRequest and one GSSENCRequest (as in
    /// PostgreSQL), then a StartupMessage or a CancelRequest.
    Startup { ssl: bool, gss: bool },
    /// Typed messages: a type byte, a length, a body.
    Typed,
    /// After a CancelRequest: nothing more is read.
    Done,
}

/// A byte stream whose reads yield only whole, well-formed frontend frames
/// (see the module doc). Writes pass through.
#[derive(Debug)]
pub struct Checked<S> {
    inner: S,
    /// Bytes read from `inner` and not handed on yet.
    buf: BytesMut,
    /// Invariant: the first `ready` bytes of `buf` are whole, checked frames.
    ready: usize,
    /// The phase of the frame that starts at `buf[ready..]`.
    phase: Phase,
    /// Set once a frame is refused: every later read fails with it, after
    /// the frames before it have been handed on.
    failed: Option<FrameError>,
}

impl<S> Checked<S> {
    /// Checks what `inner` yields, from the connection's first byte on.
    pub fn new(inner: S) -> Self {
        Checked {
            inner,
            buf: BytesMut::new(),
            ready: 0,
            phase: Phase::Startup {
                ssl: false,
                gss: false,
            },
            failed: None,
        }
    }

    /// The stream underneath, to write to or drain directly.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Checks the frames that have arrived whole after `ready`.
    fn check_buffered(&mut self) {
        while self.failed.is_none() {
            match check(&mut self.phase, &self.buf[self.ready..]) {
                Ok(Some(len)) => self.ready += len,
                Ok(None) => return,
                Err(e) => self.failed = Some(e),
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Checked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())));
            }
            let mut chunk = [0u8; 8 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream: an unfinished frame is dropped unread, as
                // PostgreSQL drops an incomplete message at EOF.
                return Poll::Ready(Ok(()));
            }
            this.buf.extend_from_slice(read.filled());
            this.check_buffered();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Checked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Checks the frame at the start of `buf`: its length once it is whole and
/// well-formed (and `phase` moved past it), `None` while more bytes are
/// needed, an error as soon as what has arrived shows it is malformed.
fn check(phase: &mut Phase, buf: &[u8]) -> Result<Option<usize>, FrameError> {
    match *phase {
        Phase::Startup { ssl, gss } => check_untyped(phase, ssl, gss, buf),
        Phase::Typed => check_typed(buf),
        Phase::Done if buf.is_empty() => Ok(None),
        Phase::Done => Err(FrameError::violation(
            "unexpected data after a cancel request".into(),
        )),
    }
}

fn check_untyped(
    phase: &mut Phase,
    ssl: bool,
    gss: bool,
    buf: &[u8],
) -> Result<Option<usize>, FrameError> {
    let Some(len) = be_u32(buf, 0) else {
        return Ok(None);
    };
    let len = len as usize;
    if !(8..=SMALL_MESSAGE_BYTES_MAX).contains(&len) {
        return Err(FrameError::violation(format!(
            "invalid length of startup packet: {len}"
        )));
    }
    let Some(code) = be_u32(buf, 4) else {
        return Ok(None);
    };
    let (major, minor) = (code >> 16, code & 0xffff);
    let fixed_len = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(FrameError::violation(format!(
                "invalid length of {what}: {len}"
            )))
        }
    };
    match code {
        SSL_REQUEST if !ssl => fixed_len(len == 8, "SSL request")?,
        GSSENC_REQUEST if !gss => fixed_len(len == 8, "GSSAPI encryption request")?,
        CANCEL_REQUEST => fixed_len(CANCEL_BYTES.contains(&len), "cancel request")?,
        _ if major == 3 => {}
        _ => {
            return Err(FrameError::unsupported(format!(
                "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2"
            )))
        }
    }
    let Some(packet) = buf.get(..len) else {
        return Ok(None);
    };
    *phase = match code {
        SSL_REQUEST => Phase::Startup { ssl: true, gss },
        GSSENC_REQUEST => Phase::Startup { ssl, gss: true },
        CANCEL_REQUEST => Phase::Done,
        _ => {
            startup_parameters(&packet[8..])?;
            Phase::Typed
        }
    };
    Ok(Some(len))
}

/// A StartupMessage's body after the version: name and value strings,
/// then a NUL as the last byte (PostgreSQL's layout check).
fn startup_parameters(body: &[u8]) -> Result<(), FrameError> {
    let mut f = Fields::new(body, "startup packet");
    while f.rest().first().is_some_and(|&b| b != 0) {
        f.cstring("parameter name")?;
        f.cstring("parameter value")?;
    }
    if f.rest().len() != 1 {
        return Err(FrameError::violation(
            "invalid startup packet layout: expected terminator as last byte".into(),
        ));
    }
    Ok(())
}

fn check_typed(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let (name, max) = match kind {
        b'Q' => ("Query message", MESSAGE_BYTES_MAX),
        b'P' => ("Parse message", MESSAGE_BYTES_MAX),
        b'B' => ("Bind message", MESSAGE_BYTES_MAX),
        b'd' => ("CopyData message", MESSAGE_BYTES_MAX),
        b'E' => ("Execute message", SMALL_MESSAGE_BYTES_MAX),
        b'D' => ("Describe message", SMALL_MESSAGE_BYTES_MAX),
        b'C' => ("Close message", SMALL_MESSAGE_BYTES_MAX),
        b'S' => ("Sync message", SMALL_MESSAGE_BYTES_MAX),
        b'H' => ("Flush message", SMALL_MESSAGE_BYTES_MAX),
        b'X' => ("Terminate message", SMALL_MESSAGE_BYTES_MAX),
        b'c' => ("CopyDone message", SMALL_MESSAGE_BYTES_MAX),
        b'f' => ("CopyFail message", SMALL_MESSAGE_BYTES_MAX),
        b'p' => ("password message", SMALL_MESSAGE_BYTES_MAX),
        b'F' => {
            return Err(FrameError::unsupported(
                "the function call protocol (FunctionCall message) is not supported".into(),
            ))
        }
        _ => {
            return Err(FrameError::violation(format!(
                "invalid frontend message type {}",
                kind.escape_ascii()
            )))
        }
    };
    let Some(len) = be_u32(buf, 1) else {
        return Ok(None);
    };
    // As u32, a negative length is larger than any bound.
    let len = len as usize;
    if !(4..=max).contains(&len) {
        return Err(FrameError::violation(format!(
            "invalid {name} length {}: must be 4 to {max}",
            len as u32 as i32
        )));
    }
    let Some(body) = buf.get(5..1 + len) else {
        return Ok(None);
    };
    let mut f = Fields::new(body, name);
    match kind {
        b'Q' | b'f' => f.cstring("text")?,
        b'P' => {
            f.cstring("statement name")?;
            f.cstring("query")?;
            let n = f.u16("parameter type count")?;
            f.take(4 * usize::from(n), "parameter types")?;
        }
        b'B' => bind(&mut f)?,
        b'E' => {
            f.cstring("portal name")?;
            f.take(4, "row limit")?;
        }
        b'D' | b'C' => {
            let target = f.take(1, "target type")?[0];
            if target != b'S' && target != b'P' {
                return Err(FrameError::violation(format!(
                    "invalid {name} subtype {}",
                    target.escape_ascii()
                )));
            }
            f.cstring("name")?;
        }
        // The body of 'p' depends on the authentication method; pgwire
        // hands it on as a buffer of its own, so nothing can run past it.
        b'd' | b'p' => f.at = f.body.len(),
        _ => {} // Sync, Flush, Terminate, CopyDone: no body.
    }
    f.end()?;
    Ok(Some(1 + len))
}

fn bind(f: &mut Fields<'_>) -> Result<(), FrameError> {
    f.cstring("portal name")?;
    f.cstring("statement name")?;
    let n = f.u16("parameter format count")?;
    f.take(2 * usize::from(n), "parameter formats")?;
    let n = f.u16("parameter count")?;
    for i in 1..=n {
        let len = i32::from_be_bytes(f.take(4, "parameter length")?.try_into().unwrap());
        match usize::try_from(len) {
            Ok(len) => {
                f.take(len, "parameter value")?;
            }
            Err(_) if len == -1 => {} // NULL
            Err(_) => {
                return Err(FrameError::violation(format!(
                    "invalid Bind message: parameter {i} has length {len}"
                )))
            }
        }
    }
    let n = f.u16("result format count")?;
    f.take(2 * usize::from(n), "result formats")?;
    Ok(())
}

/// Reads a message body field by field, never past its end.
struct Fields<'a> {
    body: &'a [u8],
    at: usize,
    /// The message's name, for errors.
    name: &'static str,
}

impl<'a> Fields<'a> {
    fn new(body: &'a [u8], name: &'static str) -> Self {
        Fields { body, at: 0, name }
    }

    fn rest(&self) -> &'a [u8] {
        &self.body[self.at..]
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FrameError> {
        let field = self.rest().get(..n).ok_or_else(|| {
            FrameError::violation(format!(
                "invalid {}: {what} ({n} bytes) runs past its end",
                self.name
            ))
        })?;
        self.at += n;
        Ok(field)
    }

    fn u16(&mut self, what: &str) -> Result<u16, FrameError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn cstring(&mut self, what: &str) -> Result<(), FrameError> {
        let n = self.rest().iter().position(|&b| b == 0).ok_or_else(|| {
            FrameError::violation(format!(
                "invalid {}: {what} is not NUL-terminated",
                self.name
            ))
        })?;
        self.at += n + 1;
        Ok(())
    }

    fn end(&self) -> Result<(), FrameError> {
        match self.rest().len() {
            0 => Ok(()),
            n => Err(FrameError::violation(format!(
                "invalid {}: {n} bytes after its last field",
                self.name
            ))),
        }
    }
}

fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut frame = vec![kind];
        frame.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        frame.extend_from_slice(body);
        frame
    }

    fn typed_check(frame: &[u8]) -> Result<Option<usize>, FrameError> {
        check(&mut Phase::Typed, frame)
    }

    #[test]
    fn well_formed_messages_pass_whole() {
        let bind = b"\0s1\0\0\x01\0\x01\0\x02\0\0\0\x017\xff\xff\xff\xff\0\0";
        for frame in [
            typed(b'Q', b"SELECT 1\0"),
            typed(b'P', b"s1\0SELECT $1\0\0\x01\0\0\0\x17"),
            typed(b'B', bind),
            typed(b'E', b"\0\0\0\0\0"),
            typed(b'D', b"Ss1\0"),
            typed(b'C', b"P\0"),
            typed(b'S', b""),
            typed(b'd', b"any\0thing"),
        ] {
            assert_eq!(typed_check(&frame).unwrap(), Some(frame.len()), "{frame:?}");
            assert_eq!(typed_check(&frame[..frame.len() - 1]).unwrap(), None);
        }
    }

    #[test]
    fn fields_past_the_frame_or_left_over_are_refused() {
        for frame in [
            typed(b'B', b"\0\0\0\x05"),               // 5 formats, none there
            typed(b'B', b"\0\0\0\0\0\x01\0\0\x01\0"), // a 256-byte parameter
            typed(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0"), // length -2
            typed(b'P', b"\0SELECT 1\0\xff\xff"),     // 65535 types, none there
            typed(b'Q', b"SELECT 1"),                 // no NUL
            typed(b'Q', b"SELECT 1\0\0"),             // a byte left over
            typed(b'E', b"\0\0\0"),                   // a short row limit
            typed(b'D', b"X\0"),                      // neither S nor P
            typed(b'S', b"\0"),
            vec![b'S', 0, 0, 0, 3],
            vec![b'Q', 0xff, 0xff, 0xff, 0xff], // negative, refused at once
            vec![b'B', 0x7f, 0, 0, 0],          // too large, refused at once
            vec![b'z'],
        ] {
            assert!(typed_check(&frame).is_err(), "{frame:?}");
        }
    }

    #[test]
    fn startup_phase_allows_one_ssl_request_then_a_startup() {
        let fresh = || Phase::Startup {
            ssl: false,
            gss: false,
        };
        let untyped = |code: u32, body: &[u8]| {
            let mut packet = (body.len() as u32 + 8).to_be_bytes().to_vec();
            packet.extend_from_slice(&code.to_be_bytes());
            packet.extend_from_slice(body);
            packet
        };
        let mut phase = fresh();
        let ssl = untyped(SSL_REQUEST, b"");
        assert_eq!(check(&mut phase, &ssl).unwrap(), Some(8));
        assert!(check(&mut phase, &ssl).is_err(), "a second SSL request");
        let startup = untyped(3 << 16, b"user\0me\0\0");
        assert_eq!(check(&mut phase, &startup).unwrap(), Some(startup.len()));
        assert_eq!(phase, Phase::Typed);
        for bad in [
            untyped(3 << 16, b"user\0me\0"),        // no terminator
            untyped(3 << 16, b"\0user\0me\0"),      // terminator too early
            untyped(3 << 16, b"user\0me"),          // value without its NUL
            untyped(9 << 16 | 9, b"user\0me\0\0"),  // protocol 9.9
            untyped(SSL_REQUEST, b"\0\0\0\0"),      // SSL request with a body
            untyped(CANCEL_REQUEST, b"\0\0\0\x01"), // cancel without a key
        ] {
            assert!(check(&mut fresh(), &bad).is_err(), "{bad:?}");
        }
        let short = [0, 0, 0, 7, 0, 3, 0, 0];
        assert!(check(&mut fresh(), &short).is_err());
    }
}
