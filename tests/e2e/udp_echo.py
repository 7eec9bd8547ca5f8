"""UDP echo server for tests/e2e/run.sh: answers "NAME:payload" on port 5353 of each address.

Usage: python3 udp_echo.py NAME ADDR...

One socket per address, so a reply leaves from the address the request was sent to (the VIP
on a DR or TUN real server) rather than the one routing would pick.
"""
import selectors
import socket
import sys

name, addrs = sys.argv[1], sys.argv[2:]
sel = selectors.DefaultSelector()
for a in addrs:
    s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM)
    if ":" in a:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((a, 5353))
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        data, peer = key.fileobj.recvfrom(2048)
        key.fileobj.sendto(name.encode() + b":" + data, peer)
