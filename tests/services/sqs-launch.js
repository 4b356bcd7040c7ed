// sqslite 2.1.1 (npm) as the SQS peer of the tests, with the SQS behaviour it leaves out or gets
// wrong restored as the SQS documentation describes it, so redelivery can be tested at all:
//  - every received message gets its own receipt handle (sqslite shares one per batch, so a
//    delete of one message deleted the whole batch);
//  - a received message is invisible for the visibility timeout (the ReceiveMessage parameter,
//    else the queue's VisibilityTimeout attribute, else 30 s) and then visible again;
//    ChangeMessageVisibility sets the remaining time (0: visible at once) - sqslite only stores
//    the number and never shows a received message again;
//  - a FIFO queue does not hand out a message group's next message while one is in flight;
//  - a message received more than the RedrivePolicy's maxReceiveCount moves to the dead-letter
//    queue; DeleteMessageBatch deletes the listed messages (sqslite kept only those).
// Everything else (the query protocol parser, XML answers, queue attributes) is sqslite's own.
// usage: node sqs-launch.js <node_modules dir> <port file>   (listens on 127.0.0.1, random port)
'use strict';

const crypto = require('crypto');
const fs = require('fs');

const modules = process.argv[2];
const portFile = process.argv[3];
const sqs = require(`${modules}/sqslite/lib/sqs`);
const { ErrorWithCode } = require(`${modules}/sqslite/lib/utils/errors`);

const md5 = (s) => crypto.createHash('md5').update(s || '').digest('hex');

function queueOf(QueueUrl) {
  const q = sqs.getQueueState(QueueUrl);
  if (!q) {
    throw new ErrorWithCode(
      'The specified queue does not exist for this wsdl version.',
      'AWS.SimpleQueueService.NonExistentQueue'
    );
  }
  return q;
}

// Makes every in-flight message whose visibility timeout ran out visible again.
function release(queue) {
  const now = Date.now();
  for (const m of queue.messages) {
    const st = m['@State'];
    if (st.isRead && st.visibleAt !== undefined && st.visibleAt <= now) {
      st.isRead = false;
      delete st.ReceiptHandle;
    }
  }
}

function redrive(queue, msg) {
  const policy = queue.Attributes.RedrivePolicy;
  if (!policy) return false;
  const max = Number(policy.maxReceiveCount);
  if (!(msg.Attributes.ApproximateReceiveCount >= max)) return false;
  const name = String(policy.deadLetterTargetArn).split(':').pop();
  const dlq = sqs.getQueueState(`http://localhost:0/queues/${name}`);
  if (!dlq) return false;
  dlq.messages.push({ ...msg, '@State': { isRead: false } });
  queue.messages = queue.messages.filter((m) => m !== msg);
  return true;
}

sqs.receiveMessage = ({ AttributeNames, MaxNumberOfMessages, MessageAttributeNames, QueueUrl, VisibilityTimeout }) => {
  const queue = queueOf(QueueUrl);
  release(queue);
  const max = Number(MaxNumberOfMessages || 1);
  const timeout = Number(
    VisibilityTimeout !== undefined ? VisibilityTimeout : queue.Attributes.VisibilityTimeout || 30
  );
  const fifo = !!queue.Attributes.FifoQueue;
  const busy = new Set(); // FIFO groups with a message in flight
  if (fifo) for (const m of queue.messages) if (m['@State'].isRead) busy.add(m.MessageGroupId);
  const out = [];
  for (const msg of [...queue.messages]) {
    if (out.length >= max) break;
    const st = msg['@State'];
    if (st.isRead || msg.Attributes.AvailableSince > Date.now()) {
      if (fifo && !st.isRead) busy.add(msg.MessageGroupId); // keep the group's order
      continue;
    }
    if (fifo && busy.has(msg.MessageGroupId) && !out.some((o) => o.MessageGroupId === msg.MessageGroupId)) {
      continue;
    }
    if (redrive(queue, msg)) continue;
    msg.Attributes.ApproximateReceiveCount += 1;
    if (!msg.Attributes.ApproximateFirstReceiveTimestamp) {
      msg.Attributes.ApproximateFirstReceiveTimestamp = Date.now();
    }
    st.isRead = true;
    st.ReceiptHandle = crypto.randomUUID();
    st.visibleAt = Date.now() + timeout * 1000;
    out.push(msg);
  }
  const names = AttributeNames || [];
  const attrNames = MessageAttributeNames || [];
  return out.map((m) => {
    const attrs = { ...m.Attributes };
    delete attrs.AvailableSince;
    if (m.MessageGroupId) attrs.MessageGroupId = m.MessageGroupId;
    const mattrs = m.MessageAttributes || {};
    return {
      Body: m.MessageBody,
      MD5OfBody: md5(m.MessageBody),
      MessageId: m.MessageId,
      ReceiptHandle: m['@State'].ReceiptHandle,
      Attributes: names.includes('All')
        ? attrs
        : Object.fromEntries(Object.entries(attrs).filter(([k]) => names.includes(k))),
      MessageAttributes: attrNames.includes('All')
        ? mattrs
        : Object.fromEntries(Object.entries(mattrs).filter(([k]) => attrNames.includes(k))),
    };
  });
};

function inFlight(queue, ReceiptHandle) {
  release(queue);
  return queue.messages.find((m) => m['@State'].isRead && m['@State'].ReceiptHandle === ReceiptHandle);
}

sqs.changeMessageVisibility = ({ QueueUrl, ReceiptHandle, VisibilityTimeout }) => {
  const queue = queueOf(QueueUrl);
  const t = Number(VisibilityTimeout);
  if (!(t >= 0 && t <= 43200)) {
    throw new ErrorWithCode(`Value ${VisibilityTimeout} for parameter VisibilityTimeout is invalid.`, 'InvalidParameterValue');
  }
  const msg = inFlight(queue, ReceiptHandle);
  if (!msg) throw new ErrorWithCode('Message does not exist or is not available for visibility timeout change.', 'MessageNotInflight');
  if (t === 0) {
    msg['@State'].isRead = false;
    delete msg['@State'].ReceiptHandle;
  } else {
    msg['@State'].visibleAt = Date.now() + t * 1000;
  }
};

sqs.deleteMessage = ({ QueueUrl, ReceiptHandle }) => {
  const queue = queueOf(QueueUrl);
  const msg = inFlight(queue, ReceiptHandle);
  if (msg) queue.messages = queue.messages.filter((m) => m !== msg);
};

sqs.deleteMessageBatch = (QueueUrl, Entries) => {
  const queue = queueOf(QueueUrl);
  const handles = new Set(Entries.map(({ ReceiptHandle }) => ReceiptHandle));
  queue.messages = queue.messages.filter((m) => !(m['@State'].isRead && handles.has(m['@State'].ReceiptHandle)));
  return Entries.map(({ Id }) => Id);
};

// The actions take these functions when they are first required, i.e. now.
const app = require(`${modules}/sqslite/lib`)({ logger: false });
app.listen({ host: '127.0.0.1', port: 0 }, (err, address) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  const port = new URL(address).port;
  fs.writeFileSync(portFile, `${port}\n`);
  console.log(`sqs listening on ${address}`);
});
