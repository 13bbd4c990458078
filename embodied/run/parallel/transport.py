"""portal clients whose socket thread sleeps when idle.

portal 3.8.3's client socket thread (client_socket.ClientSocket._loop)
wakes on one byte of a pipe per queued message, reads one byte per wake-up
and then sends from its queue until the queue is empty. When a message is
queued while the thread is between its poll() and its look at the queue
(typically right after it received a reply and the caller at once sends
the next request), the thread sends the message before reading its byte;
reading that byte later puts it into its sending mode with nothing to
send, a mode in which it no longer calls poll(): the thread spins on a
core for good. Every client of an idle env worker did (~0.6 of a core per
worker on 2 cores, docs/results.md).

socket_class() is the same client socket with another loop: it drains every
wake-up byte before it looks at the queue, asks poll() for writability
only while something waits to be sent, and otherwise always sleeps in
poll(). The wire protocol, options, callbacks and reconnects are portal's.

It also acknowledges what it received at once (TCP_QUICKACK, re-armed
after each read, as Linux drops it): the server's replies are small writes
under Nagle's algorithm, so the third of three requests in flight waited
for the kernel's delayed ACK, 40 ms (a learner's sample, write-back and
priorities are three).

And it never blocks a caller in send() while disconnected (portal waits
there for the connection, with no timeout): a learner calling its actor
after the actor died then waits in its own loop, which restarts the actor.
"""

import functools
import os
import select
import socket
import threading
import types

RECV_EVENTS = select.POLLIN | select.POLLERR | select.POLLHUP
QUICKACK = getattr(socket, 'TCP_QUICKACK', None)  # Linux only.
_SWAP = threading.Lock()


def client(address, name):
  """A portal.Client at 'host:port' on socket_class()."""
  import portal
  from portal import client as module
  with _SWAP:
    # portal.Client builds its socket from its module's client_socket.
    original = module.client_socket
    module.client_socket = types.SimpleNamespace(
        ClientSocket=socket_class(), Disconnected=original.Disconnected)
    try:
      return portal.Client(address, name, logging=False)
    finally:
      module.client_socket = original


@functools.cache
def socket_class():
  """Built on first use: importing portal switches multiprocessing to
  spawn, so this module does not import it."""
  from portal import buffers, client_socket

  class Socket(client_socket.ClientSocket):

    def send(self, *data, timeout=None):
      # portal waits here for a connection, without a timeout from
      # Client.call: a caller could then never notice that its server is
      # gone (and, say, restart it). Queued instead: the loop sends it once
      # connected (a message dropped with a lost connection is resent by
      # portal.Client, which marks its open requests on disconnect).
      assert self.running
      if len(self.sendq) > self.options.max_send_queue:
        raise RuntimeError('Too many outgoing messages enqueued')
      if not self.options.autoconn:
        self.require_connection(timeout)
      self.sendq.append(buffers.SendBuffer(
          *data, maxsize=self.options.max_msg_size))
      os.write(self.set_signal, bytes(1))

    def _loop(self):
      new_buffer = lambda: buffers.RecvBuffer(
          maxsize=self.options.max_msg_size)
      recvbuf, sock = new_buffer(), None
      poll = select.poll()
      poll.register(self.get_signal, select.POLLIN)
      while self.running or (self.sendq and sock):
        if sock is None:
          if not self.options.autoconn and not self.wantconn.wait(0.2):
            continue
          sock = self._connect()
          if sock is None:
            break  # Closed while connecting.
          poll.register(sock, RECV_EVENTS)
          self.isconn.set()
          if not self.options.autoconn:
            self.wantconn.clear()
          [fn() for fn in self.callbacks_conn]
        try:
          poll.modify(sock, RECV_EVENTS | (
              select.POLLOUT if self.sendq else 0))
          ready = dict(poll.poll(200))
          if self.get_signal in ready:
            os.read(self.get_signal, 1 << 16)  # Every pending wake-up.
          if ready.get(sock.fileno(), 0) & RECV_EVENTS:
            recvbuf = self._receive(sock, recvbuf, new_buffer)
          self._send_queued(sock)
        except OSError as e:
          detail = f'{type(e).__name__}: {e}' if str(e) else type(e).__name__
          self._log(f'Connection to server lost ({detail})')
          self.isconn.clear()
          poll.unregister(sock)
          sock.close()
          sock = None
          # As portal: queued messages are dropped; portal.Client resends
          # its open requests once connected again.
          self.sendq.clear()
          recvbuf = new_buffer()
          [fn() for fn in self.callbacks_disc]
      if sock:
        sock.close()

    def _receive(self, sock, recvbuf, new_buffer):
      while True:
        try:
          recvbuf.recv(sock)
        except BlockingIOError:
          if QUICKACK:  # See the module doc.
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
          return recvbuf
        if recvbuf.done():
          if self.recvq.qsize() > self.options.max_recv_queue:
            raise RuntimeError('Too many incoming messages enqueued')
          message = recvbuf.result()
          self.recvq.put(message)
          [fn(message) for fn in self.callbacks_recv]
          recvbuf = new_buffer()

    def _send_queued(self, sock):
      while self.sendq:
        try:
          self.sendq[0].send(sock)
        except (BlockingIOError, ConnectionResetError):
          # Full: poll() says when it drains. Reset: the receive side sees
          # the closed connection after reading what the server sent.
          return
        if self.sendq[0].done():
          self.sendq.popleft()

  return Socket
