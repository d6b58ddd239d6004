import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { MIRROR_QUEUE } from '../../queues/mirror.ts';

/** A producer and a handle on the mirror queue, on one Redis connection, for tests that enqueue jobs. */
export interface ProducerClients {
  producer: MirrorfleetProducer;
  queue: Queue;
  close(): Promise<void>;
}

export function connectProducer(redisUrl: string, keyPrefix: string): ProducerClients {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
  const queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
  return {
    producer,
    queue,
    close: async () => {
      await queue.close();
      await producer.close();
      connection.disconnect();
    },
  };
}
