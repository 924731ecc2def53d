'use strict';
// A plain HTTP client for the service's tests: one request per connection, and a client that goes away.
const http = require('http');

/**
 * One HTTP request on a fresh connection; resolves with the response (status, headers, JSON or
 * text). `chunked`: no Content-Length, the body in 16 KiB chunks. Write errors after the server
 * answered (it may stop reading an oversized body) are ignored. The client goes away after
 * `abortAfterMs`, or once the promise `abortWhen` resolves; the result is then { status: 'aborted' }.
 */
function send(url, { method = 'POST', headers = {}, body, chunked = false, abortAfterMs, abortWhen } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const h = { ...headers };
    if (body && !chunked) h['content-length'] = body.length;
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: h, agent: false }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (data += d));
      res.on('end', () => {
        let json;
        try {
          json = JSON.parse(data);
        } catch {}
        resolve({ status: res.statusCode, headers: res.headers, body: data, json });
      });
    });
    req.on('error', (e) => (abortAfterMs || abortWhen ? resolve({ status: 'aborted' }) : reject(e)));
    if (abortAfterMs) setTimeout(() => req.destroy(), abortAfterMs);
    abortWhen?.then(() => req.destroy()); // the client goes away when this promise resolves
    if (body && chunked) {
      for (let i = 0; i < body.length; i += 16384) req.write(body.subarray(i, i + 16384));
      req.end();
    } else req.end(body);
  });
}

module.exports = { send };
