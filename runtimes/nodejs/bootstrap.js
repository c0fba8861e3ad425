// kfaas Node.js runtime: loads a `file.export` handler from LAMBDA_TASK_ROOT and serves it
// through the Lambda Runtime API at AWS_LAMBDA_RUNTIME_API, one invocation at a time.
//
// Standard library only, and only `net` is loaded before the handler (the Runtime API client
// below is a minimal HTTP/1.1 one over a keep-alive socket), so that start-up and each
// invocation cost little more than the handler itself. Behaviour follows AWS's Node.js
// runtime interface client: async/promise handlers, callback handlers (`handler.length >= 3`),
// plain functions, ES modules (.mjs or "type": "module"), the `Runtime.*` init error types,
// the error shape `{errorType, errorMessage, trace}` (plus `stackTrace`, the generic Lambda
// name), console lines prefixed with time, request id and level, and response streaming
// through the global `awslambda.streamifyResponse` / `awslambda.HttpResponseStream`.
'use strict';

const net = require('net');

const API = process.env.AWS_LAMBDA_RUNTIME_API || '127.0.0.1:9001';
const SEP = API.lastIndexOf(':');
const HOST = API.slice(0, SEP);
const PORT = Number(API.slice(SEP + 1));
const BASE = '/2018-06-01/runtime';

let currentRequestId;

const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HTTP_INTEGRATION = 'application/vnd.awslambda.http-integration-response';

// What AWS's Node.js runtime puts in the global scope for streaming handlers.
globalThis.awslambda = {
  streamifyResponse(handler) {
    handler[STREAMING] = 'response';
    return handler;
  },
  HttpResponseStream: {
    /** Writes the HTTP prelude (status, headers) that function URLs expect before the body. */
    from(stream, prelude) {
      stream.setContentType(HTTP_INTEGRATION);
      stream.write(JSON.stringify(prelude || {}));
      stream.write(Buffer.alloc(8));
      return stream;
    },
  },
};

class RuntimeError extends Error {
  constructor(type, message) {
    super(message);
    this.name = `Runtime.${type}`;
  }
}

/**
 * A minimal HTTP/1.1 client for the Runtime API over one keep-alive `net` socket: each request
 * written in one piece, answers framed by Content-Length or chunked encoding (or the
 * connection's end). Requests may be pipelined: the main loop sends `/next` right behind its
 * `/response` without waiting for the 202, and answers are matched in order. Node's `http`
 * client and its Agent cost more per request than the whole exchange with a loopback server;
 * streamed responses still go through `http`.
 */
class RuntimeApiClient {
  constructor(host, port) {
    this.host = host;
    this.port = port;
    this.socket = null;
    this.corked = false;
    /** Requests written and not yet answered, oldest first. */
    this.queue = [];
  }

  get busy() {
    return this.queue.length > 0;
  }

  /** Resolves with `{status, headers, body}`; headers are lower-case, body is a Buffer. */
  request(method, path, body, headers) {
    return new Promise((resolve, reject) => {
      const payload = body === undefined || body === null ? '' : body;
      let head = `${method} ${path} HTTP/1.1\r\nHost: ${this.host}\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n`;
      if (headers) {
        for (const name of Object.keys(headers)) head += `${name}: ${headerValue(headers[name])}\r\n`;
      }
      head += '\r\n';
      const data = typeof payload === 'string' ? head + payload : Buffer.concat([Buffer.from(head, 'latin1'), payload]);
      const entry = { resolve, reject, data, retry: method === 'GET', parser: new ResponseParser() };
      this.queue.push(entry);
      this.send(data);
    });
  }

  /** Writes now-ish: requests made in the same tick (`/response` and `/next`) leave in one write. */
  send(data) {
    const socket = this.connect();
    if (!this.corked) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    socket.write(data);
  }

  connect() {
    if (this.socket) return this.socket;
    const socket = net.connect({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', (err) => this.onClose(socket, err));
    socket.on('close', () => this.onClose(socket, new Error('the Runtime API closed the connection')));
    this.socket = socket;
    return socket;
  }

  onData(chunk) {
    let bytes = chunk;
    while (this.queue.length) {
      const entry = this.queue[0];
      let done;
      try {
        done = entry.parser.push(bytes);
      } catch (err) {
        this.failAll(err);
        return;
      }
      if (!done) return;
      this.queue.shift();
      bytes = entry.parser.buf;
      entry.parser.buf = EMPTY;
      if (done.close) {
        this.drop();
        this.resend(new Error('the Runtime API closed the connection'));
      }
      entry.resolve(done);
      if (!bytes.length || !this.socket) return;
    }
    // Bytes nobody asked for: ignored.
  }

  onClose(socket, err) {
    if (socket !== this.socket) return;
    this.socket = null;
    const first = this.queue[0];
    const done = first && first.parser.end();
    if (done) {
      this.queue.shift();
      first.resolve(done);
    }
    this.resend(err);
  }

  /**
   * After the connection ended: a GET not answered at all is sent again, once, on a new
   * connection (a keep-alive connection the runtime closed); anything else fails, so a
   * runtime that is gone ends this process instead of a reconnect loop.
   */
  resend(err) {
    const waiting = this.queue;
    this.queue = [];
    for (const entry of waiting) {
      if (entry.retry && entry.parser.untouched()) {
        entry.retry = false;
        entry.parser = new ResponseParser();
        this.queue.push(entry);
        this.send(entry.data);
      } else {
        entry.reject(err);
      }
    }
  }

  drop() {
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.destroy();
    }
  }

  failAll(err) {
    this.drop();
    const waiting = this.queue;
    this.queue = [];
    for (const entry of waiting) entry.reject(err);
  }
}

const EMPTY = Buffer.alloc(0);
const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

/** Header values may not carry control characters (an error type comes from user code). */
function headerValue(value) {
  return String(value).replace(/[^\t\x20-\x7e]/g, '');
}

/**
 * Parses one HTTP/1.1 response fed in arbitrary pieces. `push` returns the response once it is
 * complete; `end` is called when the connection ends (a response framed by the close).
 */
class ResponseParser {
  constructor() {
    this.state = 'head';
    this.buf = EMPTY;
    this.status = 0;
    this.headers = {};
    this.chunks = [];
    this.received = 0;
    this.remaining = 0;
    this.close = false;
  }

  push(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      switch (this.state) {
        case 'head': {
          const end = this.buf.indexOf(HEAD_END);
          if (end < 0) {
            if (this.buf.length > 64 * 1024) throw new Error('Runtime API response head too large');
            return null;
          }
          this.parseHead(this.buf.toString('latin1', 0, end));
          this.buf = this.buf.subarray(end + 4);
          if (this.status >= 100 && this.status < 200) {
            this.headers = {};
            break; // an interim answer: the real one follows
          }
          const te = this.headers['transfer-encoding'];
          const cl = this.headers['content-length'];
          if (this.status === 204 || this.status === 304) {
            this.state = 'done';
          } else if (te !== undefined && /(^|,)\s*chunked\s*$/i.test(te)) {
            this.state = 'size';
          } else if (cl !== undefined) {
            if (!/^\d+$/.test(cl)) throw new Error(`bad Content-Length ${cl}`);
            this.remaining = Number(cl);
            this.state = 'length';
          } else {
            this.close = true;
            this.state = 'eof';
          }
          break;
        }
        case 'length': {
          const take = Math.min(this.remaining, this.buf.length);
          if (take > 0) this.chunks.push(this.buf.subarray(0, take));
          this.remaining -= take;
          this.buf = this.buf.subarray(take);
          if (this.remaining > 0) return null;
          this.state = 'done';
          break;
        }
        case 'size': {
          const eol = this.buf.indexOf(CRLF);
          if (eol < 0) return this.tooLong(1024);
          const line = this.buf.toString('latin1', 0, eol);
          const size = parseInt(line.split(';')[0].trim(), 16);
          if (!(size >= 0)) throw new Error(`bad chunk size ${line}`);
          this.buf = this.buf.subarray(eol + 2);
          this.remaining = size;
          this.state = size === 0 ? 'trailers' : 'data';
          break;
        }
        case 'data': {
          const take = Math.min(this.remaining, this.buf.length);
          if (take > 0) this.chunks.push(this.buf.subarray(0, take));
          this.remaining -= take;
          this.buf = this.buf.subarray(take);
          if (this.remaining > 0) return null;
          this.state = 'data-end';
          break;
        }
        case 'data-end': {
          if (this.buf.length < 2) return null;
          if (this.buf[0] !== 13 || this.buf[1] !== 10) throw new Error('bad chunk end');
          this.buf = this.buf.subarray(2);
          this.state = 'size';
          break;
        }
        case 'trailers': {
          const eol = this.buf.indexOf(CRLF);
          if (eol < 0) return this.tooLong(64 * 1024);
          this.buf = this.buf.subarray(eol + 2);
          if (eol === 0) this.state = 'done';
          break;
        }
        case 'eof':
          if (this.buf.length) this.chunks.push(this.buf);
          this.buf = EMPTY;
          return null;
        case 'done': {
          // Whatever follows in `buf` belongs to the next answer.
          const body = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
          return { status: this.status, headers: this.headers, body, close: this.close };
        }
        default:
          throw new Error(`bad parser state ${this.state}`);
      }
    }
  }

  /** Nothing of the answer has arrived yet. */
  untouched() {
    return this.state === 'head' && this.buf.length === 0;
  }

  /** The connection ended: complete a response framed by the close, or nothing. */
  end() {
    if (this.state !== 'eof') return null;
    this.state = 'done';
    return this.push(EMPTY);
  }

  tooLong(limit) {
    if (this.buf.length > limit) throw new Error('Runtime API response line too long');
    return null;
  }

  parseHead(text) {
    const lines = text.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!m) throw new Error(`bad Runtime API status line ${JSON.stringify(lines[0])}`);
    this.status = Number(m[1]);
    if (lines[0].startsWith('HTTP/1.0')) this.close = true;
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i];
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      this.headers[name] = name in this.headers ? `${this.headers[name]}, ${value}` : value;
    }
    const connection = this.headers.connection;
    if (connection !== undefined) {
      if (/(^|,)\s*close\s*(,|$)/i.test(connection)) this.close = true;
      else if (/(^|,)\s*keep-alive\s*(,|$)/i.test(connection)) this.close = false;
    }
  }
}

const client = new RuntimeApiClient(HOST, PORT);

/**
 * One Runtime API call; resolves with status, headers and body bytes. A call made while
 * another is in flight (an uncaught exception while `/next` waits) gets a connection of its own.
 */
function call(method, path, body, headers) {
  if (!client.busy) return client.request(method, BASE + path, body, headers);
  const extra = new RuntimeApiClient(HOST, PORT);
  return extra.request(method, BASE + path, body, headers).finally(() => extra.drop());
}

/** Lambda's error shape, as AWS's Node.js runtime builds it. */
function toErrorShape(err) {
  try {
    if (err instanceof Error || (err && typeof err.stack === 'string' && err.name)) {
      const trace = String(err.stack || '').split('\n');
      return { errorType: err.name, errorMessage: err.message, trace, stackTrace: trace };
    }
    return { errorType: typeof err, errorMessage: String(err), trace: [], stackTrace: [] };
  } catch (_) {
    return { errorType: 'handled', errorMessage: 'error could not be serialised', trace: [] };
  }
}

function postError(path, err) {
  const shape = toErrorShape(err);
  const body = JSON.stringify(shape);
  logLine('ERROR', `Invoke Error \t${body}`);
  return call('POST', path, body, {
    'Content-Type': 'application/json',
    'Lambda-Runtime-Function-Error-Type': shape.errorType,
  });
}

/** Writes a console line the way Lambda does: time, request id, level, message. */
function logLine(level, message) {
  const id = currentRequestId || 'undefined';
  process.stdout.write(`${new Date().toISOString()}\t${id}\t${level}\t${message}\n`);
}

/**
 * `_X_AMZN_TRACE_ID` changes with every invocation. Set through `process.env` it would go through
 * setenv(3), and glibc keeps every value ever set: a warm instance grew by 112 MB per million
 * invocations (measured). So `process.env` becomes a view of the real environment in which this
 * one variable lives in JavaScript; reads, writes, `in`, `Object.keys` and spreading (which
 * child_process uses for a child's environment) all see it.
 */
const TRACE_VAR = '_X_AMZN_TRACE_ID';
let currentTrace;
function installTraceEnv() {
  const real = process.env;
  if (real[TRACE_VAR] !== undefined) currentTrace = real[TRACE_VAR];
  delete real[TRACE_VAR];
  const own = (value) => ({ value, writable: true, enumerable: true, configurable: true });
  process.env = new Proxy(real, {
    get: (target, key) => (key === TRACE_VAR ? currentTrace : Reflect.get(target, key)),
    set(target, key, value) {
      if (key !== TRACE_VAR) return Reflect.set(target, key, value);
      currentTrace = String(value); // as process.env does with any value
      return true;
    },
    has: (target, key) => (key === TRACE_VAR ? currentTrace !== undefined : Reflect.has(target, key)),
    deleteProperty(target, key) {
      if (key !== TRACE_VAR) return Reflect.deleteProperty(target, key);
      currentTrace = undefined;
      return true;
    },
    ownKeys(target) {
      const keys = Reflect.ownKeys(target);
      return currentTrace === undefined ? keys : [...keys, TRACE_VAR];
    },
    getOwnPropertyDescriptor(target, key) {
      if (key !== TRACE_VAR) return Reflect.getOwnPropertyDescriptor(target, key);
      return currentTrace === undefined ? undefined : own(currentTrace);
    },
    defineProperty(target, key, descriptor) {
      if (key !== TRACE_VAR) return Reflect.defineProperty(target, key, descriptor);
      currentTrace = String(descriptor.value);
      return true;
    },
  });
}

function patchConsole() {
  const util = require('util');
  const levels = { log: 'INFO', info: 'INFO', debug: 'DEBUG', warn: 'WARN', error: 'ERROR', trace: 'TRACE' };
  for (const [method, level] of Object.entries(levels)) {
    console[method] = (...args) => logLine(level, util.format(...args));
  }
}

/** Resolves `dir/file.export.nested` in the task root, as AWS's runtime does. */
async function loadHandler(root, handlerString) {
  const path = require('path');
  const fs = require('fs');
  const slash = handlerString.lastIndexOf('/');
  const dir = handlerString.slice(0, slash + 1);
  const rest = handlerString.slice(slash + 1);
  const dot = rest.indexOf('.');
  if (dot <= 0 || dot === rest.length - 1) {
    throw new RuntimeError('MalformedHandlerName', `Bad handler ${handlerString}`);
  }
  const moduleName = rest.slice(0, dot);
  const exportPath = rest.slice(dot + 1).split('.');
  const base = path.resolve(root, dir, moduleName);
  const file = ['.js', '.mjs', '.cjs'].map((ext) => base + ext).find((f) => fs.existsSync(f));
  const importFile = async (f) => import(require('url').pathToFileURL(f).href);
  let mod;
  try {
    if (file && file.endsWith('.mjs')) {
      mod = await importFile(file);
    } else {
      try {
        mod = require(file || base);
      } catch (e) {
        if (e && e.code === 'ERR_REQUIRE_ESM' && file) mod = await importFile(file);
        else throw e;
      }
    }
  } catch (e) {
    if (e instanceof SyntaxError) {
      throw new RuntimeError('UserCodeSyntaxError', `${e.name}: ${e.message}`);
    }
    if (e && e.code === 'MODULE_NOT_FOUND' && !file) {
      throw new RuntimeError('ImportModuleError', `Error: Cannot find module '${moduleName}'`);
    }
    throw e;
  }
  let fn = mod;
  for (const part of exportPath) fn = fn == null ? undefined : fn[part];
  if (typeof fn !== 'function' && mod && mod.default) {
    fn = mod.default;
    for (const part of exportPath) fn = fn == null ? undefined : fn[part];
  }
  if (typeof fn !== 'function') {
    throw new RuntimeError('HandlerNotFound', `${handlerString} is undefined or not exported`);
  }
  return fn;
}

function makeContext(headers) {
  const deadline = Number(headers['lambda-runtime-deadline-ms']);
  const parse = (v) => (v === undefined ? undefined : JSON.parse(v));
  const env = process.env;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    clientContext: parse(headers['lambda-runtime-client-context']),
    identity: parse(headers['lambda-runtime-cognito-identity']),
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
  };
}

/**
 * Runs the handler and settles with its result. The first of callback, returned promise or
 * (for plain functions of fewer than three parameters) returned value wins.
 */
function runHandler(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, value) => {
      if (settled) return;
      settled = true;
      if (err !== null && err !== undefined) reject(err);
      else resolve(value);
    };
    context.done = callback;
    context.succeed = (value) => callback(null, value);
    context.fail = (err) => callback(err === undefined || err === null ? 'handled' : err);
    let returned;
    try {
      returned = handler(event, context, callback);
    } catch (e) {
      callback(e);
      return;
    }
    if (returned && typeof returned.then === 'function') {
      returned.then((v) => callback(null, v), (e) => callback(e === undefined ? new Error('rejected') : e));
    } else if (handler.length < 3) {
      callback(null, returned);
    }
  });
}

/**
 * Runs a streaming handler: its `responseStream` writes straight into a chunked
 * `/response` request; an error after the first byte travels in the request's trailers.
 */
function runStreaming(handler, event, context, requestId) {
  const { Writable } = require('stream');
  const http = require('http');
  return new Promise((resolve) => {
    const req = http.request({
      host: HOST,
      port: PORT,
      method: 'POST',
      path: `${BASE}/invocation/${encodeURIComponent(requestId)}/response`,
      agent: streamingAgent(http),
      headers: {
        'Lambda-Runtime-Function-Response-Mode': 'streaming',
        'Transfer-Encoding': 'chunked',
        Trailer: 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body',
        'Content-Type': 'application/octet-stream',
      },
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', resolve);
    const stream = new Writable({
      write(chunk, encoding, callback) {
        req.write(chunk, encoding, callback);
      },
      final(callback) {
        req.end();
        callback();
      },
    });
    stream.setContentType = (type) => {
      if (!req.headersSent) req.setHeader('Content-Type', type);
    };
    const fail = (err) => {
      const shape = toErrorShape(err);
      logLine('ERROR', `Invoke Error \t${JSON.stringify(shape)}`);
      req.addTrailers({
        'Lambda-Runtime-Function-Error-Type': shape.errorType,
        'Lambda-Runtime-Function-Error-Body': Buffer.from(JSON.stringify(shape)).toString('base64'),
      });
      req.end();
    };
    let returned;
    try {
      returned = Promise.resolve(handler(event, stream, context));
    } catch (err) {
      returned = Promise.reject(err);
    }
    returned.then(
      () => {
        if (!stream.writableEnded) stream.end();
      },
      fail,
    );
  });
}

let agent;
/** One keep-alive agent for streamed responses, made on the first one. */
function streamingAgent(http) {
  if (!agent) agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  return agent;
}

async function main() {
  installTraceEnv();
  patchConsole();
  const id = (p) => `/invocation/${encodeURIComponent(p)}`;
  let handler;
  try {
    handler = await loadHandler(process.env.LAMBDA_TASK_ROOT || process.cwd(), process.env._HANDLER || '');
  } catch (err) {
    await postError('/init/error', err).catch(() => {});
    process.exit(1);
  }
  const fatal = (err) => {
    const done = currentRequestId ? postError(`${id(currentRequestId)}/error`, err) : postError('/init/error', err);
    done.catch(() => {}).finally(() => process.exit(129));
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', (reason) => {
    const err = new RuntimeError('UnhandledPromiseRejection', String(reason && reason.stack ? reason.stack : reason));
    fatal(err);
  });
  // `/next` goes out right behind each `/response` (pipelined on the same connection), so the
  // runtime has the poll as soon as it has the result.
  const pollNext = () => client.request('GET', `${BASE}/invocation/next`);
  let polled = pollNext();
  for (;;) {
    const next = await polled;
    if (next.status !== 200) throw new Error(`/next answered ${next.status}: ${next.body}`);
    const requestId = next.headers['lambda-runtime-aws-request-id'];
    currentRequestId = requestId;
    const trace = next.headers['lambda-runtime-trace-id'];
    currentTrace = trace || undefined;
    let posted;
    try {
      const event = next.body.length ? JSON.parse(next.body.toString('utf8')) : null;
      if (handler[STREAMING] === 'response') {
        await runStreaming(handler, event, makeContext(next.headers), requestId);
        currentRequestId = undefined;
        polled = pollNext();
        continue;
      }
      const value = await runHandler(handler, event, makeContext(next.headers));
      const result = JSON.stringify(value === undefined ? null : value);
      posted = call('POST', `${id(requestId)}/response`, result, { 'Content-Type': 'application/json' });
    } catch (err) {
      posted = postError(`${id(requestId)}/error`, err);
    }
    polled = pollNext();
    // The runtime's answer to the post says nothing the loop acts on, but a broken
    // connection ends the process here.
    await posted;
    currentRequestId = undefined;
  }
}

main().catch((err) => {
  process.stderr.write(`kfaas nodejs bootstrap: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
