//! The controller transport's messages and framing: each frame is a `u32` big-endian length
//! and that many bytes of JSON. A connection carries one request at a time, each answered by
//! one response, so neither side needs correlation ids; a caller that gives up on a response
//! drops the connection.

use std::io;

use openraft::error::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::progress::QuorumStatus;
use super::{NodeId, SnapshotMeta, TypeConfig, Vote};
use crate::client::Stream;
use crate::controller::image::{CommandResult, MetadataCommand, MetadataImage};

/// A frame larger than this closes the connection.
pub(crate) const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// A whole snapshot in one frame: the image is small.
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        image: Box<MetadataImage>,
    },
    /// A command proposed on another node, to be written by this one if it leads.
    Forward(MetadataCommand),
    /// A broker that is not a voter asks to replicate the metadata log as a learner.
    Join {
        node_id: NodeId,
        addr: String,
    },
    /// Take a learner out of the membership (its broker left the cluster for good).
    RemoveLearner {
        node_id: NodeId,
    },
    /// The quorum's state as the leader knows it (Kafka's DescribeQuorum).
    DescribeQuorum,
    /// A broker is alive (Kafka's BrokerHeartbeat), to the active controller. The connection
    /// it came on closing is news too: the broker may be gone.
    Heartbeat {
        broker: i32,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<SnapshotResponse<NodeId>, Fatal<NodeId>>),
    Forward(ForwardReply),
    Join(JoinReply),
    RemoveLearner(RemoveReply),
    DescribeQuorum(DescribeReply),
    Heartbeat(HeartbeatReply),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum DescribeReply {
    Status(QuorumStatus),
    NotLeader {
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HeartbeatReply {
    /// Noted by the active controller.
    Noted,
    /// This node is not the active controller; the one it knows of, if any.
    NotLeader {
        leader: Option<NodeId>,
        addr: Option<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForwardReply {
    /// Committed and applied on the leader, as the entry at `index`.
    Applied { result: CommandResult, index: u64 },
    /// This node does not lead; nothing was written. The leader it knows of, if any.
    NotLeader {
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    /// The leader accepted the command but could not say how it ended (stopped, timed out):
    /// it may or may not be committed.
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum JoinReply {
    /// The node is in the membership with this address.
    Joined,
    NotLeader {
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    /// Try again later (e.g. another membership change is in progress).
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RemoveReply {
    /// The node is not in the membership (any more).
    Removed,
    /// The node votes: taking it out is a change of the quorum, not a learner's removal.
    Voter,
    NotLeader {
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    /// Try again later (e.g. another membership change is in progress).
    Failed(String),
}

/// One connection's framing, over TCP or TLS.
pub(crate) struct Connection {
    stream: BufReader<Box<dyn Stream>>,
    buf: Vec<u8>,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream) -> Connection {
        let _ = stream.set_nodelay(true);
        Connection::over(Box::new(stream))
    }

    /// A connection over an established stream (TLS after its handshake).
    pub(crate) fn over(stream: Box<dyn Stream>) -> Connection {
        Connection {
            stream: BufReader::new(stream),
            buf: Vec::new(),
        }
    }

    /// Reads one frame; `Ok(None)` when the peer closed the connection between frames.
    pub(crate) async fn read<T: DeserializeOwned>(&mut self) -> io::Result<Option<T>> {
        let len = match self.stream.read_u32().await {
            Ok(len) => len as usize,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        };
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
            ));
        }
        // Grown as bytes arrive, not reserved from the announced length: a peer cannot make us
        // allocate what it does not send.
        self.buf.clear();
        let read = (&mut self.stream)
            .take(len as u64)
            .read_to_end(&mut self.buf)
            .await?;
        if read < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the peer closed the connection {read} bytes into a frame of {len}"),
            ));
        }
        let value = serde_json::from_slice(&self.buf).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("undecodable frame: {e}"),
            )
        })?;
        if self.buf.capacity() > 1 << 20 {
            // Do not keep a snapshot-sized buffer for every idle connection.
            self.buf = Vec::new();
        }
        Ok(Some(value))
    }

    pub(crate) async fn write<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let frame = encode(value)?;
        self.write_frame(&frame).await
    }

    /// Writes a frame made by [`encode`].
    pub(crate) async fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let stream = self.stream.get_mut();
        stream.write_all(frame).await?;
        stream.flush().await
    }
}

/// A whole frame: length and JSON. Fails if the value does not fit in one.
pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut frame = vec![0; 4];
    serde_json::to_writer(&mut frame, value).map_err(io::Error::other)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        ));
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_an_oversized_one_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut conn = Connection::new(TcpStream::connect(addr).await.unwrap());
            conn.write(&Request::Join {
                node_id: 4,
                addr: "h:1".into(),
            })
            .await
            .unwrap();
            let reply: Option<Response> = conn.read().await.unwrap();
            assert!(matches!(reply, Some(Response::Join(JoinReply::Joined))));
            // A length past the limit, then nothing: the server must refuse without reading on.
            conn.stream
                .get_mut()
                .write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
                .await
                .unwrap();
            let closed: io::Result<Option<Response>> = conn.read().await;
            assert!(matches!(closed, Ok(None) | Err(_)));
        });
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Connection::new(stream);
        let request: Option<Request> = conn.read().await.unwrap();
        assert!(matches!(request, Some(Request::Join { node_id: 4, .. })));
        conn.write(&Response::Join(JoinReply::Joined))
            .await
            .unwrap();
        let err = conn.read::<Request>().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(conn);
        client.await.unwrap();
    }
}
