// The serving guide's client example is typechecked (not run) by examples.test.ts against the openai
// package's types: the package is a devDependency here for that.
import type OpenAI from 'openai';

/** The client the serving guide's example builds. */
export type ServingGuideClient = OpenAI;
